import base64
import time

import jwt as pyjwt
import pytest
from django.core.exceptions import ValidationError

from project import outbound
from secrets_app.api import Vault
from secrets_app.exceptions import SecretMisconfigured, TokenRejected
from secrets_app.kinds.hs256 import generate_secret
from secrets_app.services.secrets import secret_create
from tests.contracts import SecretKindContract
from tests.servers import Reply

SECRET = "hs256-shared-secret-0123456789abcdef"


def jwt_checking_server(local_server, verify):
    """The local server accepts a request only if its Bearer JWT verifies (with PyJWT)."""

    def handle(request):
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        try:
            claims = verify(token)
        except pyjwt.PyJWTError as exc:
            return Reply(status=401, body={"error": type(exc).__name__})
        return Reply(body=claims)

    local_server.handler = handle
    return local_server


class TestHs256Contract(SecretKindContract):
    kind = "hs256"

    @pytest.fixture
    def definition(self, local_server):
        self.server = jwt_checking_server(local_server, lambda token: pyjwt.decode(token, SECRET, algorithms=["HS256"]))
        return {"secret": SECRET}

    def exercise(self, vault, name, definition):
        token = vault.sign_jws(name, {"sub": "42"})
        response = outbound.request("GET", self.server.url, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200 and response.json()["sub"] == "42"


class TestHs256:
    @pytest.fixture
    def vault(self, db):
        secret_create(name="hook-key", kind="hs256", data={"secret": SECRET})
        return Vault()

    def test_keys_shorter_than_32_bytes_are_refused(self, db):
        with pytest.raises(ValidationError) as error:
            secret_create(name="k", kind="hs256", data={"secret": "too-short"})
        assert error.value.message_dict["secret"] == ["The key has 9 bytes; HS256 needs at least 32."]

    def test_verifies_a_token_minted_by_another_library(self, vault):
        token = pyjwt.encode({"sub": "7", "exp": int(time.time()) + 60, "scope": "a b"}, SECRET, algorithm="HS256")
        assert vault.verify_jws("hook-key", token, scopes=["b"])["sub"] == "7"

    def test_refuses_an_unsigned_token(self, vault):
        token = pyjwt.encode({"sub": "7", "exp": int(time.time()) + 60}, None, algorithm="none")
        with pytest.raises(TokenRejected):
            vault.verify_jws("hook-key", token)

    def test_refuses_a_token_signed_with_another_secret(self, vault):
        token = pyjwt.encode({"exp": int(time.time()) + 60}, SECRET + "x", algorithm="HS256")
        with pytest.raises(TokenRejected):
            vault.verify_jws("hook-key", token)

    def test_refuses_expired_tokens_and_tokens_without_exp(self, vault):
        expired = pyjwt.encode({"exp": int(time.time()) - 120}, SECRET, algorithm="HS256")
        no_exp = pyjwt.encode({"sub": "1"}, SECRET, algorithm="HS256")
        for token in (expired, no_exp):
            with pytest.raises(TokenRejected):
                vault.verify_jws("hook-key", token)

    def test_checks_issuer_and_audience_exactly(self, vault):
        token = pyjwt.encode(
            {"exp": int(time.time()) + 60, "iss": "https://issuer.example", "aud": ["api"]}, SECRET, algorithm="HS256"
        )
        assert vault.verify_jws("hook-key", token, issuer="https://issuer.example", audience="api")
        with pytest.raises(TokenRejected):
            vault.verify_jws("hook-key", token, issuer="https://issuer.example/")
        with pytest.raises(TokenRejected):
            vault.verify_jws("hook-key", token, audience="other")

    def test_jwe_round_trip_with_a_generated_32_byte_key(self, db):
        secret_create(name="enc", kind="hs256", data={"secret": generate_secret(), "encoding": "base64url"})
        vault = Vault()
        token = vault.encrypt_jwe("enc", {"card": "4111"})
        assert token.count(".") == 4 and "4111" not in token
        assert vault.decrypt_jwe("enc", token) == b'{"card":"4111"}'

    def test_jwe_needs_exactly_32_bytes(self, vault):
        with pytest.raises(SecretMisconfigured, match="exactly 32 bytes"):
            vault.encrypt_jwe("hook-key", "x")


class TestHs256Encoding:
    """A key marked base64url is checked on save: the decoder would skip what it cannot read."""

    @pytest.mark.parametrize(
        "key",
        [
            "not base64url: just a long sentence, shared with partner!",  # 34 bytes once the rest is skipped
            base64.b64encode(b"\xfb\xff" * 24).decode(),  # standard base64: '+' and '/'
        ],
    )
    def test_a_key_marked_base64url_that_is_not_base64url_is_refused(self, db, key):
        with pytest.raises(ValidationError) as error:
            secret_create(name="k", kind="hs256", data={"secret": key, "encoding": "base64url"})
        assert error.value.message_dict["secret"] == [
            "Not valid base64url: use only letters, digits, '-' and '_' (and '=' at the end)."
        ]
