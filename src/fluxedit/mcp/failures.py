"""Every failure of a tool becomes a ToolError whose text an assistant can act on.

The MCP SDK hides the text of unexpected exceptions from the client, so anything that is the caller's to fix
(the server's refusal naming a field and its limit, a failed prediction, an unreachable server) is turned
into a ToolError here, with that text.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from mcp.server.mcpserver.exceptions import ToolError

from ..client import ApiError, PredictionCancelled, PredictionFailed, WaitTimeout
from ..schema import FluxeditError

REFUSALS = {
    401: "the API key is missing or not valid",
    402: "the key's spending limit is reached",
    404: "not found",
    413: "too large",
    422: "an input is not valid",
    429: "too many requests, or the queue is full; try again later",
}


@contextmanager
def readable_failures(server_url: str, hint: str = "") -> Iterator[None]:
    """`hint`: how to point this MCP server at another fluxedit server (shown when it cannot be reached)."""
    try:
        yield
    except ToolError:
        raise
    except ApiError as error:
        what = REFUSALS.get(error.status_code, "the server refused the request")
        if error.status_code >= 500:
            what = "the server failed at the request"
        raise ToolError(f"fluxedit answered {error.status_code} ({what}): {error.message}") from None
    except PredictionFailed as failure:
        raise ToolError(
            f"prediction {failure.prediction.get('id')} failed: {failure.error_code}: {failure.error_message}"
        ) from None
    except (PredictionCancelled, WaitTimeout) as ended:
        raise ToolError(str(ended)) from None
    except FluxeditError as error:  # InputError from the arguments: names the field
        raise ToolError(str(error)) from None
    except httpx.TimeoutException as error:
        reason = type(error).__name__
        raise ToolError(f"the fluxedit server at {server_url} did not answer in time ({reason})") from None
    except httpx.HTTPError as error:
        reason = str(error) or type(error).__name__
        raise ToolError(f"could not reach the fluxedit server at {server_url}: {reason}.{hint}") from None
    except OSError as error:  # a local file that cannot be read
        raise ToolError(f"cannot read {error.filename or 'the file'}: {error.strerror or error}") from None
