"""Check that a Hugging Face repo's weights can be had, and say exactly why not.

diffusers turns every hub failure into "not cached locally"; a user needs to
know whether the licence is not accepted, the token is missing or wrong, the
repo does not exist, or the machine is offline. One small request tells.
"""

from __future__ import annotations

import httpx
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)
from huggingface_hub.utils import logging as hub_logging

from ..schema import ModelUnavailable

PROBE_FILE = "model_index.json"
hub_logging.set_verbosity_error()  # its own warning repeats, less clearly, what we raise


def check_hub_access(repo_id: str, token: str | None, flag: str = "--model") -> None:
    """Raise ModelUnavailable with what to do when `repo_id` cannot be downloaded or found in the cache.

    `flag` is the option that named it: --model, or --components for a single-file transformer's text encoders
    and VAE (which only a diffusers folder or hub id can give)."""
    if flag == "--components":
        local_copy = "or point --components at a local diffusers folder of FLUX.1 Kontext [dev]"
    else:
        local_copy = "or point --model at a local copy (a diffusers folder, or a single .safetensors file)"
    try:
        hf_hub_download(repo_id, PROBE_FILE, token=token or None)
    except GatedRepoError:
        who = "the account of the token in HF_TOKEN" if token else "your account"
        raise ModelUnavailable(
            f"{repo_id} is gated and {who} has no access yet: accept the licence at "
            f"https://huggingface.co/{repo_id} while logged in, "
            + ("check that HF_TOKEN belongs to that account, " if token else "then set HF_TOKEN to a token of it, ")
            + local_copy
        ) from None
    except RepositoryNotFoundError:
        hint = "check the id and that HF_TOKEN can read it" if token else "set HF_TOKEN if it is private or gated"
        raise ModelUnavailable(f"{repo_id} was not found on the Hugging Face hub: {hint}, {local_copy}") from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, httpx.TransportError, ConnectionError):
        raise ModelUnavailable(
            f"{repo_id} is not in the local Hugging Face cache and the hub cannot be reached from here: "
            f"download it where there is internet access (`hf download {repo_id}`) and copy the cache, " + local_copy
        ) from None
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else "?"
        if status == 401:
            raise ModelUnavailable(
                f"the hub refused the token for {repo_id} (HTTP 401): set HF_TOKEN to a valid token, {local_copy}"
            ) from None
        raise ModelUnavailable(f"the Hugging Face hub answered HTTP {status} for {repo_id}: {local_copy}") from None
