"""Standard Webhooks signing (standardwebhooks.com), as Replicate signs its webhooks.

The secret is "whsec_" and base64 key bytes; each delivery carries webhook-id, webhook-timestamp and
webhook-signature "v1,<base64 HMAC-SHA256 of '<id>.<timestamp>.<body>'>", so a receiver checks that
we sent it, that it is fresh, and can drop a retry it has already handled (same id).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    # Standard base64 has no "_", so the secret splits cleanly on its prefix (receivers rely on that).
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signature_headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message_id, timestamp, body),
    }
