"""JWS/JWT signing and verification, JWE encryption, with jwcrypto, in one place.

Every operation names its algorithms: a verifier accepts exactly the one algorithm of its
key (HS256 for a shared secret, RS256 for an RSA key), so ``alg: none`` and the HS/RS
confusion attack (an HS256 token "signed" with a public key) fail before any key is used.
Header fields that point at keys (``jku``, ``x5u``, ``jwk``) are never followed; an
unknown ``crit`` header is refused by jwcrypto. Claims are checked here, not left to the
library, so the rules are visible: ``exp`` required, ``nbf`` honoured, both with a small
leeway; ``iss`` and ``aud`` compared exactly; scopes from ``scope`` or ``scp``.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from jwcrypto import jwe, jwk, jws
from jwcrypto.common import JWException, json_decode

from project import jsonsafe, outbound
from secrets_app.app_settings import vault_settings
from secrets_app.exceptions import InsufficientScope, JoseError, SecretMisconfigured, TokenRejected

logger = logging.getLogger(__name__)

MAX_TOKEN_LENGTH = 16 * 1024
MIN_RSA_BITS = 2048
CONTENT_ENCRYPTION = "A256GCM"
#: A JWE with ``zip: DEF`` may inflate far beyond its own size (17 KB into 12.5 MB); its
#: content is refused past this many bytes once decompressed.
MAX_JWE_PLAINTEXT_BYTES = 1024 * 1024


def sign(claims: Mapping[str, Any], key: jwk.JWK, algorithm: str, *, headers: Mapping[str, Any] | None = None) -> str:
    """A compact JWS whose payload is the JSON ``claims`` (a JWT)."""
    protected = {"alg": algorithm, "typ": "JWT", **(headers or {})}
    if key.get("kid"):
        protected.setdefault("kid", key["kid"])
    token = jws.JWS(json.dumps(dict(claims), separators=(",", ":")).encode())
    try:
        token.add_signature(key, alg=algorithm, protected=protected)
    except (JWException, ValueError, TypeError) as exc:
        raise JoseError(f"Cannot sign with this key: {type(exc).__name__}.") from None
    return token.serialize(compact=True)


def decode_header(token: str) -> dict[str, Any]:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        raise TokenRejected("The token is not a compact JWS.")
    try:
        header = json_decode(jws.base64url_decode(token.split(".", 1)[0]))
    except Exception:  # malformed base64 or JSON: all the same to a caller
        raise TokenRejected("The token header is malformed.") from None
    if not isinstance(header, dict):
        raise TokenRejected("The token header is malformed.")
    return header


def verify(
    token: str,
    keys: jwk.JWKSet,
    *,
    algorithm: str,
    audience: str | None = None,
    issuer: str | None = None,
    scopes: Iterable[str] = (),
    leeway: int | None = None,
) -> dict[str, Any]:
    """Verify a JWT signed with ``algorithm`` by one of ``keys`` and return its claims.

    Raises TokenRejected (InsufficientScope for a valid token lacking a scope).
    """
    header = decode_header(token)
    if header.get("alg") != algorithm:
        raise TokenRejected("The token's algorithm is not accepted.")
    verifier = jws.JWS()
    verifier.allowed_algs = [algorithm]
    try:
        verifier.deserialize(token)
        verifier.verify(keys, alg=algorithm)
        claims = jsonsafe.loads(verifier.payload)
    except (JWException, ValueError, TypeError, KeyError):
        raise TokenRejected("The token signature does not verify.") from None
    if not isinstance(claims, dict):
        raise TokenRejected("The token payload is not a JSON object.")
    check_claims(claims, audience=audience, issuer=issuer, scopes=scopes, leeway=leeway)
    return claims


def check_claims(
    claims: Mapping[str, Any],
    *,
    audience: str | None,
    issuer: str | None,
    scopes: Iterable[str],
    leeway: int | None,
    now: float | None = None,
) -> None:
    leeway = vault_settings.jwt_leeway_seconds if leeway is None else leeway
    now = time.time() if now is None else now
    expires = claims.get("exp")
    if isinstance(expires, bool) or not isinstance(expires, (int, float)):
        raise TokenRejected("The token has no valid 'exp' claim.")
    if now > expires + leeway:
        raise TokenRejected("The token has expired.")
    not_before = claims.get("nbf")
    if not_before is not None:
        if isinstance(not_before, bool) or not isinstance(not_before, (int, float)):
            raise TokenRejected("The token's 'nbf' claim is not a number.")
        if now < not_before - leeway:
            raise TokenRejected("The token is not valid yet.")
    if issuer is not None and claims.get("iss") != issuer:
        raise TokenRejected("The token's issuer is not accepted.")
    if audience is not None:
        granted_audience = claims.get("aud")
        audiences = granted_audience if isinstance(granted_audience, list) else [granted_audience]
        if audience not in audiences:
            raise TokenRejected("The token is not meant for this audience.")
    required = [scope for scope in scopes if scope]
    if required:
        granted = token_scopes(claims)
        missing = [scope for scope in required if scope not in granted]
        if missing:
            raise InsufficientScope(f"The token lacks the scope {' '.join(missing)}.")


def token_scopes(claims: Mapping[str, Any]) -> set[str]:
    """Scopes from ``scope`` (space-separated, RFC 8693) or ``scp`` (list or string)."""
    granted: set[str] = set()
    for claim in ("scope", "scp"):
        value = claims.get(claim)
        if isinstance(value, str):
            granted.update(value.split())
        elif isinstance(value, list):
            granted.update(item for item in value if isinstance(item, str))
    return granted


def encrypt(plaintext: bytes, key: jwk.JWK, *, algorithm: str) -> str:
    """A compact JWE of ``plaintext`` for ``key`` (RSA-OAEP-256 or dir, with A256GCM)."""
    protected = {"alg": algorithm, "enc": CONTENT_ENCRYPTION}
    if key.get("kid"):
        protected["kid"] = key["kid"]
    token = jwe.JWE(plaintext, protected=protected)
    token.allowed_algs = [algorithm, CONTENT_ENCRYPTION]
    try:
        token.add_recipient(key)
    except (JWException, ValueError, TypeError) as exc:
        raise JoseError(f"Cannot encrypt with this key: {type(exc).__name__}.") from None
    return token.serialize(compact=True)


def decrypt(token: str, key: jwk.JWK, *, algorithm: str) -> bytes:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH * 4 or token.count(".") != 4:
        raise JoseError("The value is not a compact JWE.")
    decrypter = jwe.JWE()
    decrypter.allowed_algs = [algorithm, CONTENT_ENCRYPTION]
    try:
        decrypter.deserialize(token)
        # jwcrypto's own output limit is 100 MB; ours is passed here, where it can be.
        decrypter.decrypt(key, max_plaintext=MAX_JWE_PLAINTEXT_BYTES)
    except (JWException, ValueError, TypeError, KeyError):
        # jwcrypto reports why only in its log; the limit is checked after the content
        # was authenticated, so saying so tells nothing to someone without the key.
        if any("exceeds maximum allowed" in entry for entry in getattr(decrypter, "decryptlog", None) or ()):
            raise JoseError(
                f"The JWE's content is larger than the {MAX_JWE_PLAINTEXT_BYTES}-byte limit once decompressed."
            ) from None
        raise JoseError("The JWE cannot be decrypted with this key.") from None
    return decrypter.payload


# -- keys ---------------------------------------------------------------------------


def symmetric_key(secret: bytes) -> jwk.JWK:
    return jwk.JWK(kty="oct", k=jws.base64url_encode(secret))


def rsa_key_from_pem(pem: str, *, private: bool) -> jwk.JWK:
    """Load an RSA key from PEM and check it is at least 2048 bits.

    Raises ValueError with a short reason (it ends up in a form error).
    """
    data = pem.strip().encode()
    try:
        loaded = load_pem_private_key(data, password=None) if private else load_pem_public_key(data)
    except (ValueError, TypeError):
        kind = "private" if private else "public"
        raise ValueError(f"Not a valid unencrypted PEM {kind} key.") from None
    if not isinstance(loaded, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        raise ValueError("Not an RSA key.")
    if loaded.key_size < MIN_RSA_BITS:
        raise ValueError(f"The RSA key has {loaded.key_size} bits; at least {MIN_RSA_BITS} are required.")
    key = jwk.JWK.from_pyca(loaded)
    return key


@functools.lru_cache(maxsize=256)
def public_key(pem: str) -> jwk.JWK:
    """The RSA public key of ``pem`` with its ``kid``, parsed once per process (verifying
    a token on every request must not parse PEM every time). Do not modify the result."""
    return with_key_id(rsa_key_from_pem(pem, private=False))


def with_key_id(key: jwk.JWK) -> jwk.JWK:
    """The key with ``kid`` set to its RFC 7638 thumbprint, for JWKS and token headers."""
    key["kid"] = key.thumbprint()
    return key


def generate_rsa_private_pem(bits: int) -> str:
    from cryptography.hazmat.primitives import serialization

    private_key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def public_pem(key: jwk.JWK) -> str:
    return key.export_to_pem(private_key=False).decode()


# -- JWKS downloads -----------------------------------------------------------------


class _JwksCache:
    """Per-process cache of downloaded key sets.

    A set is used for ``jwks_cache_seconds``. A token naming a ``kid`` the cached set does
    not hold triggers a new download (the issuer rotated its keys), but at most once per
    ``jwks_min_refetch_seconds`` per URL, failed downloads included, so random ``kid``
    values cannot turn us into a request amplifier. A refetch that fails (an error, or a
    set without one usable key) keeps the cached set while it is still within its
    lifetime: an issuer's hiccup must not break the keys that verify today's tokens.
    """

    def __init__(self):
        self._lock = threading.Lock()
        # url -> (downloaded at, key set, last download attempt)
        self._entries: dict[str, tuple[float, jwk.JWKSet, float]] = {}

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def keys(self, url: str, *, kid: str | None = None) -> jwk.JWKSet:
        now = time.monotonic()
        with self._lock:
            cached = self._entries.get(url)
            fresh = cached is not None and now - cached[0] < vault_settings.jwks_cache_seconds
            if fresh:
                fetched_at, keyset, attempted_at = cached
                known = kid is None or keyset.get_key(kid) is not None
                if known or now - attempted_at < vault_settings.jwks_min_refetch_seconds:
                    return keyset
                self._entries[url] = (fetched_at, keyset, now)
        try:
            keyset = self._download(url)
        except SecretMisconfigured:
            if fresh:
                logger.warning("Refetching the JWKS from %s failed; the cached key set stays in use.", url)
                return cached[1]
            raise
        with self._lock:
            self._entries[url] = (now, keyset, now)
        return keyset

    @staticmethod
    def _download(url: str) -> jwk.JWKSet:
        try:
            response = outbound.request(
                "GET",
                url,
                headers={"Accept": "application/json"},
                limits=outbound.Limits(timeout=vault_settings.outbound_timeout_seconds, max_response_bytes=512 * 1024),
            )
            response.raise_for_status()
            document = jsonsafe.loads(response.content)
            keyset = jwk.JWKSet()
            for entry in document.get("keys", []):
                if entry.get("kty") == "RSA" and entry.get("use", "sig") == "sig":
                    key = jwk.JWK(**{k: v for k, v in entry.items() if k not in ("d", "p", "q", "dp", "dq", "qi")})
                    # The same floor as for keys typed in (rsa_key_from_pem): a weak key is
                    # left out, so a token it signed fails as signed by an unknown key.
                    if key.get_op_key("verify").key_size >= MIN_RSA_BITS:
                        keyset.add(key)
        except outbound.OutboundError as exc:
            raise SecretMisconfigured(f"Cannot download the JWKS from {url}: {exc}") from None
        except Exception as exc:  # bad JSON, bad keys, HTTP errors: one reason for the user
            raise SecretMisconfigured(f"Cannot use the JWKS from {url}: {type(exc).__name__}.") from None
        if not keyset["keys"]:
            raise SecretMisconfigured(f"The JWKS from {url} holds no RSA signing key of {MIN_RSA_BITS} bits or more.")
        return keyset


jwks_cache = _JwksCache()
