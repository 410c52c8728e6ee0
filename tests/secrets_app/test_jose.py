"""JWKS downloads (which keys are used, what a failed download leaves in place), JWE limits."""

import time

import jwt as pyjwt
import pytest
from jwcrypto import jwe, jwk

from secrets_app import jose
from secrets_app.api import Vault
from secrets_app.exceptions import JoseError, SecretMisconfigured, TokenRejected
from secrets_app.jose import jwks_cache
from secrets_app.services.secrets import secret_create
from tests.secrets_app.kinds.test_rs256 import PRIVATE_PEM, private_pem
from tests.servers import Reply, TricklingServer

WEAK_PEM = private_pem(1024)


def jwks_reply(**keys_by_kid):
    published = [
        {**jwk.JWK.from_pem(pem.encode()).export_public(as_dict=True), "kid": kid} for kid, pem in keys_by_kid.items()
    ]
    return Reply(body={"keys": published})


def token(pem, kid):
    return pyjwt.encode({"exp": int(time.time()) + 60, "sub": kid}, pem, algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def issuer(db, local_server):
    """An rs256 secret that verifies with the keys of a local JWKS server."""
    jwks_cache.clear()
    secret_create(name="issuer", kind="rs256", data={"jwks_url": f"{local_server.url}/jwks"})
    yield local_server
    jwks_cache.clear()


class TestJwksDownloads:
    @pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # the weak key is the point
    def test_an_rsa_key_below_2048_bits_is_not_used(self, issuer):
        issuer.handler = lambda request: jwks_reply(weak=WEAK_PEM, strong=PRIVATE_PEM)
        vault = Vault()
        assert vault.verify_jws("issuer", token(PRIVATE_PEM, "strong"))["sub"] == "strong"
        with pytest.raises(TokenRejected):
            vault.verify_jws("issuer", token(WEAK_PEM, "weak"))

    @pytest.mark.parametrize(
        "failure",
        [Reply(status=503), Reply(body={"keys": []}), Reply(body="<html>maintenance</html>")],
        ids=["http-503", "no-keys", "not-json"],
    )
    def test_a_failed_refetch_keeps_the_cached_key_set(self, failure, issuer, settings):
        settings.FLOWGATE_JWKS_MIN_REFETCH_SECONDS = 0
        issuer.handler = lambda request: jwks_reply(k0=PRIVATE_PEM)
        vault = Vault()
        vault.verify_jws("issuer", token(PRIVATE_PEM, "k0"))
        issuer.handler = lambda request: failure
        with pytest.raises(TokenRejected):  # an unknown kid, a refetch that fails: a rejected token
            vault.verify_jws("issuer", token(private_pem(), "k1"))
        assert len(issuer.requests) == 2
        assert vault.verify_jws("issuer", token(PRIVATE_PEM, "k0"))["sub"] == "k0"  # the cached set still works

    def test_a_failed_refetch_counts_against_the_minimum_interval(self, issuer, settings):
        settings.FLOWGATE_JWKS_MIN_REFETCH_SECONDS = 1
        issuer.handler = lambda request: jwks_reply(k0=PRIVATE_PEM)
        vault = Vault()
        vault.verify_jws("issuer", token(PRIVATE_PEM, "k0"))
        time.sleep(1.1)
        issuer.handler = lambda request: Reply(status=503)
        for kid in ("k1", "k2", "k3"):  # random kids during an outage: one more download, not three
            with pytest.raises(TokenRejected):
                vault.verify_jws("issuer", token(PRIVATE_PEM, kid))
        assert len(issuer.requests) == 2

    def test_a_jwks_trickled_byte_by_byte_is_cut_at_the_deadline(self, settings):
        settings.FLOWGATE_OUTBOUND_TIMEOUT_SECONDS = 1
        server = TricklingServer()
        jwks_cache.clear()
        with pytest.raises(SecretMisconfigured, match="within its 1 s deadline"):
            jwks_cache.keys(server.url)
        assert server.finished.wait(60)
        assert server.sent < 100


def deflated_jwe(plaintext: bytes, key: jwk.JWK) -> str:
    """A JWE as another party may send it: compressed (``zip: DEF``) before encryption."""
    token = jwe.JWE(plaintext, protected={"alg": "dir", "enc": "A256GCM", "zip": "DEF"})
    token.add_recipient(key)
    return token.serialize(compact=True)


class TestJweLimits:
    key = jose.symmetric_key(b"k" * 32)

    def test_jwe_decompression_is_capped(self):
        bomb = deflated_jwe(b"0" * (20 * 1024 * 1024), self.key)
        assert len(bomb) < 64 * 1024  # a token of ordinary size
        with pytest.raises(JoseError, match="larger than the 1048576-byte limit once decompressed"):
            jose.decrypt(bomb, self.key, algorithm="dir")

    def test_a_compressed_jwe_within_the_limit_decrypts(self):
        plaintext = b'{"card": "4111"}' * 1000
        assert jose.decrypt(deflated_jwe(plaintext, self.key), self.key, algorithm="dir") == plaintext

    def test_a_wrong_key_is_still_reported_as_a_wrong_key(self):
        token = deflated_jwe(b"0" * (20 * 1024 * 1024), self.key)
        with pytest.raises(JoseError, match="cannot be decrypted with this key"):
            jose.decrypt(token, jose.symmetric_key(b"j" * 32), algorithm="dir")
