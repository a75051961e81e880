"""Signed lines between the barrier tasks and the driver's listeners.

Progress messages, hellos and model deliveries each carry an HMAC-SHA256 of their body keyed by
the fit's secret (a random token made on the driver), so a listener drops anything not sent by
a task of this fit.
"""

from __future__ import annotations

import hashlib
import hmac
import json


def _signature(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def sign(secret: str, message: dict) -> bytes:
    """One wire line: ``<hex HMAC> <JSON>\\n``."""
    body = json.dumps(message, separators=(",", ":")).encode()
    return _signature(secret, body).encode() + b" " + body + b"\n"


def verify(secret: str, line: bytes) -> dict | None:
    """The message of a signed line, or None if the signature does not match."""
    signature, _, body = line.strip().partition(b" ")
    if not hmac.compare_digest(signature, _signature(secret, body).encode()):
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None
