import time

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.exceptions import ValidationError

from project import outbound
from secrets_app.api import Vault
from secrets_app.exceptions import TokenRejected, WrongSecretKind
from secrets_app.jose import jwks_cache
from secrets_app.services.secrets import rs256_key_pair_generate, secret_create
from tests.contracts import SecretKindContract
from tests.secrets_app.kinds.test_hs256 import jwt_checking_server
from tests.servers import Reply


def private_pem(bits=2048) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


PRIVATE_PEM = private_pem()


class TestRs256Contract(SecretKindContract):
    kind = "rs256"

    @pytest.fixture
    def definition(self, local_server):
        public = serialization.load_pem_private_key(PRIVATE_PEM.encode(), None).public_key()
        self.server = jwt_checking_server(local_server, lambda token: pyjwt.decode(token, public, algorithms=["RS256"]))
        return {"private_key": PRIVATE_PEM}

    def secret_values(self, definition):
        # The PEM body lines are what must never show (the armour lines are public text).
        return [line for line in definition["private_key"].splitlines() if "-----" not in line][:5]

    def exercise(self, vault, name, definition):
        token = vault.sign_jws(name, {"sub": "42"})
        response = outbound.request("GET", self.server.url, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200 and response.json()["sub"] == "42"


class TestRs256:
    def test_generate_creates_a_key_once(self, db):
        secret = secret_create(name="signer", kind="rs256", data={"generate": True})
        first = secret.values["private_key"]
        assert "BEGIN PRIVATE KEY" in first and "BEGIN PUBLIC KEY" in secret.config["public_key"]
        from secrets_app.services.secrets import secret_update

        assert secret_update(secret=secret, data={"generate": True}) == []
        assert secret.values["private_key"] == first

    def test_regenerating_replaces_the_pair(self, db):
        secret = secret_create(name="signer", kind="rs256", data={"private_key": PRIVATE_PEM})
        rs256_key_pair_generate(secret=secret)
        secret.refresh_from_db()
        assert secret.values["private_key"] != PRIVATE_PEM

    def test_keys_below_2048_bits_are_refused(self, db):
        with pytest.raises(ValidationError) as error:
            secret_create(name="weak", kind="rs256", data={"private_key": private_pem(1024)})
        assert error.value.message_dict["private_key"] == ["The RSA key has 1024 bits; at least 2048 are required."]

    def test_invalid_pem_is_refused(self, db):
        with pytest.raises(ValidationError) as error:
            secret_create(name="bad", kind="rs256", data={"private_key": "-----BEGIN PRIVATE KEY-----\nnope\n"})
        assert error.value.message_dict["private_key"] == ["Not a valid unencrypted PEM private key."]

    def test_a_public_key_alone_verifies_but_cannot_sign(self, db):
        public = serialization.load_pem_private_key(PRIVATE_PEM.encode(), None).public_key()
        public_pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        secret_create(name="partner-key", kind="rs256", data={"public_key": public_pem.decode()})
        token = pyjwt.encode({"exp": int(time.time()) + 60, "sub": "p"}, PRIVATE_PEM, algorithm="RS256")
        vault = Vault()
        assert vault.verify_jws("partner-key", token)["sub"] == "p"
        with pytest.raises(WrongSecretKind, match="holds no private key"):
            vault.sign_jws("partner-key", {})

    def test_refuses_an_hs256_token_made_with_the_public_key_as_secret(self, db):
        secret = secret_create(name="signer", kind="rs256", data={"private_key": PRIVATE_PEM})
        public_pem = secret.config["public_key"].encode()
        forged = pyjwt.api_jws.PyJWS(algorithms=["HS256"])
        forged._algorithms["HS256"].prepare_key = lambda key: (
            key
        )  # PyJWT refuses PEM as HMAC key; an attacker would not
        token = forged.encode(b'{"exp": 9999999999}', public_pem, algorithm="HS256")
        with pytest.raises(TokenRejected):
            Vault().verify_jws("signer", token)

    def test_jwe_round_trip(self, db):
        secret_create(name="signer", kind="rs256", data={"private_key": PRIVATE_PEM})
        vault = Vault()
        token = vault.encrypt_jwe("signer", "attack at dawn")
        assert token.split(".")[0]  # compact JWE
        assert vault.decrypt_jwe("signer", token) == b"attack at dawn"

    def test_published_keys_appear_in_the_jwks(self, db, client):
        secret_create(name="published", kind="rs256", data={"private_key": PRIVATE_PEM, "publish": True})
        secret_create(name="private", kind="rs256", data={"generate": True})
        keys = client.get("/.well-known/jwks.json").json()["keys"]
        assert len(keys) == 1 and keys[0]["kty"] == "RSA" and keys[0]["kid"] and "d" not in keys[0]
        token = Vault().sign_jws("published", {"sub": "x"})
        assert pyjwt.get_unverified_header(token)["kid"] == keys[0]["kid"]

    def test_jwks_url_verifies_tokens_of_an_issuer_and_refetches_for_a_new_kid(self, db, local_server, settings):
        settings.FLOWGATE_JWKS_MIN_REFETCH_SECONDS = 0
        jwks_cache.clear()
        keys = [PRIVATE_PEM]

        def jwks(request):
            from jwcrypto import jwk

            published = []
            for number, pem in enumerate(keys):
                key = jwk.JWK.from_pem(pem.encode())
                published.append({**key.export_public(as_dict=True), "kid": f"k{number}"})
            return Reply(body={"keys": published})

        local_server.handler = jwks
        secret_create(name="issuer", kind="rs256", data={"jwks_url": f"{local_server.url}/jwks"})
        vault = Vault()
        token = pyjwt.encode({"exp": int(time.time()) + 60}, PRIVATE_PEM, algorithm="RS256", headers={"kid": "k0"})
        vault.verify_jws("issuer", token)
        vault.verify_jws("issuer", token)
        assert len(local_server.requests) == 1  # cached
        rotated = private_pem()
        keys.append(rotated)
        token = pyjwt.encode({"exp": int(time.time()) + 60}, rotated, algorithm="RS256", headers={"kid": "k1"})
        assert vault.verify_jws("issuer", token)
        assert len(local_server.requests) == 2  # fetched again for the unknown kid
