"""Proof Key for Code Exchange, RFC 7636 §4 (S256 only: ``plain`` protects nothing)."""

import base64
import hashlib
import secrets


def code_verifier() -> str:
    """A high-entropy verifier of 64 unreserved characters (§4.1 allows 43 to 128)."""
    return secrets.token_urlsafe(48)


def code_challenge(verifier: str) -> str:
    """BASE64URL(SHA256(ASCII(code_verifier))) without padding (§4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
