"""JWKS downloads: which keys are used, and what a failed download leaves in place."""

import time

import jwt as pyjwt
import pytest
from jwcrypto import jwk

from secrets_app.api import Vault
from secrets_app.exceptions import TokenRejected
from secrets_app.jose import jwks_cache
from secrets_app.services.secrets import secret_create
from tests.secrets_app.kinds.test_rs256 import PRIVATE_PEM, private_pem
from tests.servers import Reply

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
