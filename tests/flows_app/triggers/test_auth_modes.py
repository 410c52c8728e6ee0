"""Each authentication mode of endpoint triggers, accepted and refused, with hostile inputs.

Tokens are minted by PyJWT or by hand, never by our own signing code, so that what we
accept is what an independent issuer produces.
"""

import base64
import hashlib
import hmac
import json
import time

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwcrypto import jwk

from flows_app.models import FlowRun
from secrets_app.jose import jwks_cache
from secrets_app.models import Secret
from secrets_app.services.secrets import secret_create, secret_update
from tests.flows_app.conftest import make_endpoint_flow
from tests.servers import RecordingServer, Reply

pytestmark = pytest.mark.django_db

HS_KEY = "a-shared-hs256-key-of-at-least-32-bytes!"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PRIVATE_PEM = RSA_KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
RSA_PUBLIC_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
).decode()
ISSUER, AUDIENCE = "https://idp.example.com", "https://api.example.com"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def claims(**changes):
    now = int(time.time())
    base = {"sub": "client-7", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, "scope": "orders:read orders:write"}
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def handmade(header: dict, payload: dict, key: bytes | None) -> str:
    """A JWS assembled by hand: HS256 over ``key``, or an empty signature without one."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest()) if key is not None else ""
    return f"{signing_input}.{signature}"


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def hs_hook():
    secret_create(name="hook-key", kind="hs256", data={"secret": HS_KEY})
    make_endpoint_flow(
        "orders",
        {"path": "orders", "auth": {"kind": "jwt", "secret": "hook-key", "issuer": ISSUER, "audience": AUDIENCE, "scopes": ["orders:write"]}},
    )
    return "orders"


@pytest.fixture
def rs_hook():
    secret_create(name="signer", kind="rs256", data={"private_key": RSA_PRIVATE_PEM})
    make_endpoint_flow(
        "rs-orders",
        {"path": "rs-orders", "auth": {"kind": "jwt", "secret": "signer", "issuer": ISSUER, "audience": AUDIENCE, "scopes": ["orders:write"]}},
    )
    return "rs-orders"


def assert_invalid_token(response):
    assert response.status_code == 401, response.content
    assert response["WWW-Authenticate"] == 'Bearer realm="flowgate", error="invalid_token"'
    assert response.json() == {"error": "unauthorized"}  # the same answer, whatever the check that failed
    assert not FlowRun.objects.exists()


class TestJwtBearer:
    def test_tokens_from_an_independent_library_are_accepted(self, call, hs_hook, rs_hook):
        assert call(hs_hook, {}, headers=bearer(pyjwt.encode(claims(), HS_KEY, algorithm="HS256"))).status_code == 202
        assert call(rs_hook, {}, headers=bearer(pyjwt.encode(claims(), RSA_PRIVATE_PEM, algorithm="RS256"))).status_code == 202
        run = FlowRun.objects.filter(flow__slug="rs-orders").get()
        assert run.input["caller"]["subject"] == "client-7" and run.input["caller"]["claims"]["scope"] == "orders:read orders:write"

    def test_the_scope_may_come_as_scp(self, call, hs_hook):
        token = pyjwt.encode(claims(scope=None, scp=["orders:write"]), HS_KEY, algorithm="HS256")
        assert call(hs_hook, {}, headers=bearer(token)).status_code == 202

    @pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
    def test_alg_none_is_refused_in_any_capitalisation(self, call, hs_hook, alg):
        assert_invalid_token(call(hs_hook, {}, headers=bearer(handmade({"alg": alg, "typ": "JWT"}, claims(), None))))

    @pytest.mark.parametrize(
        "hmac_key",
        [RSA_PUBLIC_PEM.encode(), json.dumps(jwk.JWK.from_pem(RSA_PUBLIC_PEM.encode()).export_public(as_dict=True)).encode()],
        ids=["pem", "jwk"],
    )
    def test_an_hs256_token_keyed_with_the_rs256_public_key_is_refused(self, call, rs_hook, hmac_key):
        assert_invalid_token(call(rs_hook, {}, headers=bearer(handmade({"alg": "HS256", "typ": "JWT"}, claims(), hmac_key))))

    @pytest.mark.parametrize("kid", ["no-such-key", "../../../etc/passwd", "http://127.0.0.1:1/keys"])
    def test_a_wrong_or_path_like_kid_is_refused(self, call, rs_hook, kid):
        token = pyjwt.encode(claims(), RSA_PRIVATE_PEM, algorithm="RS256", headers={"kid": kid})
        assert_invalid_token(call(rs_hook, {}, headers=bearer(token)))

    @pytest.mark.parametrize("header", ["jku", "x5u", "jwk"])
    def test_key_pointing_headers_are_never_followed(self, call, rs_hook, header):
        attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        attacker_pem = attacker.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        attacker_jwk = jwk.JWK.from_pem(attacker_pem).export_public(as_dict=True)
        server = RecordingServer(lambda request: Reply(body={"keys": [attacker_jwk]}))
        try:
            value = attacker_jwk if header == "jwk" else f"{server.url}/keys.json"
            token = pyjwt.encode(claims(), attacker_pem, algorithm="RS256", headers={header: value})
            assert_invalid_token(call(rs_hook, {}, headers=bearer(token)))
            assert server.requests == []  # no outbound request was made
        finally:
            server.stop()

    def test_an_unknown_crit_header_is_refused(self, call, hs_hook):
        token = pyjwt.encode(claims(), HS_KEY, algorithm="HS256", headers={"crit": ["urn:example:must-know"], "urn:example:must-know": 1})
        assert_invalid_token(call(hs_hook, {}, headers=bearer(token)))

    @pytest.mark.parametrize(
        "changes",
        [
            {"iss": ISSUER + "/"},
            {"aud": AUDIENCE + "/"},
            {"aud": "https://another-api.example.com"},
            {"exp": int(time.time()) - 3600},
            {"exp": None},
            {"nbf": int(time.time()) + 3600},
        ],
        ids=["iss-trailing-slash", "aud-trailing-slash", "other-audience", "expired", "no-exp", "not-yet-valid"],
    )
    def test_claims_that_do_not_match_are_refused(self, call, hs_hook, changes):
        assert_invalid_token(call(hs_hook, {}, headers=bearer(pyjwt.encode(claims(**changes), HS_KEY, algorithm="HS256"))))

    def test_a_tampered_payload_is_refused(self, call, hs_hook):
        header, payload, signature = pyjwt.encode(claims(scope="orders:read"), HS_KEY, algorithm="HS256").split(".")
        forged = b64(json.dumps(claims(scope="orders:write")).encode())
        assert_invalid_token(call(hs_hook, {}, headers=bearer(f"{header}.{forged}.{signature}")))

    @pytest.mark.parametrize("authorization", ["", "Bearer", "Bearer ", "Basic abc", "Bearer not.a.jwt", "Bearer a.b", "Bearer " + "x" * 20000])
    def test_missing_or_malformed_tokens_are_refused(self, call, hs_hook, authorization):
        assert_invalid_token(call(hs_hook, {}, headers={"Authorization": authorization} if authorization else {}))

    @pytest.mark.parametrize("scope", ["orders:read", "orders:write-all", "xorders:write", "orders:writ", ""])
    def test_a_valid_token_without_the_scope_gets_403(self, call, hs_hook, scope):
        response = call(hs_hook, {}, headers=bearer(pyjwt.encode(claims(scope=scope), HS_KEY, algorithm="HS256")))
        assert response.status_code == 403
        assert response["WWW-Authenticate"] == 'Bearer realm="flowgate", error="insufficient_scope", scope="orders:write"'
        assert response.json() == {"error": "insufficient_scope"}
        assert not FlowRun.objects.exists()

    def test_a_signed_token_with_a_nan_claim_is_refused_not_stored(self, call, hs_hook):
        payload = claims(amount=float("nan"))  # json.dumps writes NaN, which is not JSON
        assert_invalid_token(call(hs_hook, {}, headers=bearer(handmade({"alg": "HS256", "typ": "JWT"}, payload, HS_KEY.encode()))))

    def test_a_jwks_url_is_cached_and_random_kids_do_not_make_us_fetch_again(self, call, settings):
        jwks_cache.clear()
        public = jwk.JWK.from_pem(RSA_PRIVATE_PEM.encode())
        served = {"keys": [{**public.export_public(as_dict=True), "kid": "k1", "use": "sig"}]}
        server = RecordingServer(lambda request: Reply(body=served))
        try:
            secret_create(name="idp", kind="rs256", data={"jwks_url": f"{server.url}/jwks.json"})
            make_endpoint_flow("idp-hook", {"path": "idp-hook", "auth": {"kind": "jwt", "secret": "idp"}})
            good = pyjwt.encode(claims(), RSA_PRIVATE_PEM, algorithm="RS256", headers={"kid": "k1"})
            assert call("idp-hook", {}, headers=bearer(good)).status_code == 202
            assert call("idp-hook", {}, headers=bearer(good)).status_code == 202
            for n in range(5):
                unknown = pyjwt.encode(claims(), RSA_PRIVATE_PEM, algorithm="RS256", headers={"kid": f"random-{n}"})
                assert call("idp-hook", {}, headers=bearer(unknown)).status_code == 401
            assert len(server.requests) == 1  # one download; unknown kids within the minimum interval fetch nothing
        finally:
            server.stop()
            jwks_cache.clear()


class TestBasic:
    @pytest.fixture
    def hook(self):
        secret_create(name="partner", kind="basic_auth", data={"username": "partner", "password": "s3cret-pässword"})
        make_endpoint_flow("partner-in", {"path": "partner-in", "auth": {"kind": "basic", "secret": "partner"}})
        return "partner-in"

    @staticmethod
    def basic(user, password):
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    def test_the_right_credentials_start_the_flow(self, call, hook):
        assert call(hook, {"a": 1}, headers=self.basic("partner", "s3cret-pässword")).status_code == 202
        assert FlowRun.objects.get().input["caller"] == {"auth": "basic", "subject": "partner", "claims": {}}

    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Authorization": "Basic !!!not-base64"},
            {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
            {"Authorization": "Bearer abc"},
        ],
    )
    def test_missing_or_malformed_credentials_are_refused(self, call, hook, headers):
        response = call(hook, {}, headers=headers)
        assert response.status_code == 401 and response["WWW-Authenticate"] == 'Basic realm="flowgate", charset="UTF-8"'

    @pytest.mark.parametrize("user,password", [("partner", "wrong"), ("other", "s3cret-pässword"), ("partner", "")])
    def test_wrong_credentials_are_refused(self, call, hook, user, password):
        assert call(hook, {}, headers=self.basic(user, password)).status_code == 401
        assert not FlowRun.objects.exists()


class TestApiKey:
    def test_a_key_in_the_chosen_header(self, call):
        secret_create(name="crm-key", kind="api_token", data={"token": "key-0f3b9d"})
        make_endpoint_flow("keyed", {"path": "keyed", "auth": {"kind": "api_key", "secret": "crm-key", "header": "X-Partner-Key"}})
        assert call("keyed", {}, headers={"X-Partner-Key": "key-0f3b9d"}).status_code == 202
        for headers in ({}, {"X-Partner-Key": "key-0f3b9"}, {"X-API-Key": "key-0f3b9d"}, {"Authorization": "Bearer key-0f3b9d"}):
            response = call("keyed", {}, headers=headers)
            assert response.status_code == 401 and response.json() == {"error": "unauthorized"}

    def test_a_key_as_an_authorization_bearer(self, call):
        secret_create(name="crm-key", kind="api_token", data={"token": "key-0f3b9d"})
        make_endpoint_flow("bearer-key", {"path": "bearer-key", "auth": {"kind": "api_key", "secret": "crm-key", "header": "Authorization"}})
        assert call("bearer-key", {}, headers={"Authorization": "Bearer key-0f3b9d"}).status_code == 202
        assert call("bearer-key", {}, headers={"Authorization": "key-0f3b9d"}).status_code == 401


SHARED = "whsec_5b8f0e2c7d9a41f3"


def hex_hmac(message: bytes, digest="sha256", key=SHARED) -> str:
    return hmac.new(key.encode(), message, digest).hexdigest()


class TestSignature:
    @pytest.fixture
    def shared(self):
        return secret_create(name="webhook-secret", kind="api_token", data={"token": SHARED})

    def test_github(self, call, shared):
        make_endpoint_flow("gh", {"path": "gh", "auth": {"kind": "signature", "secret": "webhook-secret", "scheme": "github"}})
        body = json.dumps({"action": "opened"}).encode()
        good = {"X-Hub-Signature-256": "sha256=" + hex_hmac(body)}
        assert call("gh", body, headers=good).status_code == 202
        assert call("gh", body + b" ", headers=good).status_code == 401  # the body was changed
        assert call("gh", body, headers={"X-Hub-Signature-256": "sha1=" + hex_hmac(body, "sha1")}).status_code == 401
        assert call("gh", body, headers={}).status_code == 401

    def test_stripe_style_timestamps_stop_replays(self, call, shared):
        make_endpoint_flow("pay", {"path": "pay", "auth": {"kind": "signature", "secret": "webhook-secret", "scheme": "stripe", "tolerance_seconds": 300}})
        body = b'{"type": "invoice.paid"}'

        def signed(at):
            return {"Stripe-Signature": f"t={at},v1={'0' * 64},v1={hex_hmac(f'{at}.'.encode() + body)}"}

        assert call("pay", body, headers=signed(int(time.time()))).status_code == 202
        replay = call("pay", body, headers=signed(int(time.time()) - 600))
        assert replay.status_code == 401 and FlowRun.objects.count() == 1
        assert call("pay", body, headers={"Stripe-Signature": f"t={int(time.time())}"}).status_code == 401

    def test_signed_delivery_replayed_within_tolerance_starts_no_second_run(self, call, shared):
        make_endpoint_flow("pay", {"path": "pay", "auth": {"kind": "signature", "secret": "webhook-secret", "scheme": "stripe"}})
        make_endpoint_flow("gh", {"path": "gh", "auth": {"kind": "signature", "secret": "webhook-secret", "scheme": "github"}})
        body, at = b'{"type": "invoice.paid"}', int(time.time())
        valid = f"v1={hex_hmac(f'{at}.'.encode() + body)}"
        first = call("pay", body, headers={"Stripe-Signature": f"t={at},v1={'0' * 64},{valid}"})
        # The same signed delivery, its header reshuffled and with an unsigned Idempotency-Key of its own.
        replay = call("pay", body, headers={"Stripe-Signature": f"{valid},t={at}", "Idempotency-Key": "fresh"})
        assert first.status_code == replay.status_code == 202
        assert replay.json() == first.json() and replay["Idempotent-Replayed"] == "true"
        later = int(time.time()) + 1  # signed again: a new delivery
        assert call("pay", body, headers={"Stripe-Signature": f"t={later},v1={hex_hmac(f'{later}.'.encode() + body)}"}).json() != first.json()

        push = json.dumps({"ref": "refs/heads/main"}).encode()
        signed = {"X-Hub-Signature-256": "sha256=" + hex_hmac(push)}
        delivered = call("gh", push, headers={**signed, "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"})
        redelivered = call("gh", push, headers={**signed, "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"})
        forged_id = call("gh", push, headers={**signed, "X-GitHub-Delivery": "00000000-0000-0000-0000-000000000000"})
        assert delivered.json() == redelivered.json() == forged_id.json()
        assert redelivered["Idempotent-Replayed"] == forged_id["Idempotent-Replayed"] == "true"
        assert FlowRun.objects.filter(flow__slug="pay").count() == 2 and FlowRun.objects.filter(flow__slug="gh").count() == 1

    def test_slack(self, call, shared):
        make_endpoint_flow("slack-in", {"path": "slack-in", "auth": {"kind": "signature", "secret": "webhook-secret", "scheme": "slack"}})
        body, at = b"token=x&team_id=T1", str(int(time.time()))
        headers = {"X-Slack-Request-Timestamp": at, "X-Slack-Signature": "v0=" + hex_hmac(f"v0:{at}:".encode() + body)}
        assert call("slack-in", body, headers=headers, content_type="application/x-www-form-urlencoded").status_code == 202
        assert FlowRun.objects.get().input["body"] == {"token": "x", "team_id": "T1"}
        old = str(int(time.time()) - 3600)
        stale = {"X-Slack-Request-Timestamp": old, "X-Slack-Signature": "v0=" + hex_hmac(f"v0:{old}:".encode() + body)}
        assert call("slack-in", body, headers=stale, content_type="application/x-www-form-urlencoded").status_code == 401

    def test_generic_with_an_hs256_key_in_base64(self, call):
        secret_create(name="hs", kind="hs256", data={"secret": HS_KEY})
        make_endpoint_flow(
            "generic",
            {"path": "generic", "auth": {"kind": "signature", "secret": "hs", "scheme": "generic", "header": "X-Signature", "algorithm": "sha512", "encoding": "base64", "prefix": "v1="}},
        )
        body = b'{"id": 1}'
        signature = base64.b64encode(hmac.new(HS_KEY.encode(), body, "sha512").digest()).decode()
        assert call("generic", body, headers={"X-Signature": f"v1={signature}"}).status_code == 202
        assert call("generic", body, headers={"X-Signature": signature}).status_code == 401


class TestOpenAccess:
    def test_open_access_is_an_explicit_choice(self, call):
        make_endpoint_flow("public", {"path": "public", "auth": {"kind": "open"}})
        assert call("public", {"hello": "world"}).status_code == 202


class TestStatusUrl:
    """A run's status URL answers only the caller that started it; others get 404."""

    @staticmethod
    def jwt_callers():
        secret_create(name="hook-key", kind="hs256", data={"secret": HS_KEY})
        make_endpoint_flow("who", {"path": "who", "auth": {"kind": "jwt", "secret": "hook-key"}})
        alice, bob = (bearer(pyjwt.encode(claims(sub=sub), HS_KEY, algorithm="HS256")) for sub in ("alice", "bob"))
        return alice, bob, lambda: None

    @staticmethod
    def api_key_callers():
        secret_create(name="key", kind="api_token", data={"token": "alice-key-0f3b9d"})
        make_endpoint_flow("who", {"path": "who", "auth": {"kind": "api_key", "secret": "key"}})
        # One key at a time: the secret's key changes hands between the calls.
        return {"X-API-Key": "alice-key-0f3b9d"}, {"X-API-Key": "bob-key-77ac12"}, lambda: secret_update(
            secret=Secret.objects.get(name="key"), data={"token": "bob-key-77ac12"}
        )

    @staticmethod
    def basic_callers():
        secret_create(name="login", kind="basic_auth", data={"username": "alice", "password": "pw-alice-123"})
        make_endpoint_flow("who", {"path": "who", "auth": {"kind": "basic", "secret": "login"}})
        return TestBasic.basic("alice", "pw-alice-123"), TestBasic.basic("bob", "pw-bob-4567"), lambda: secret_update(
            secret=Secret.objects.get(name="login"), data={"username": "bob", "password": "pw-bob-4567"}
        )

    @pytest.mark.parametrize("mode", ["jwt", "api_key", "basic"])
    def test_status_url_answers_only_the_caller_that_started_the_run(self, call, client, mode):
        alice, bob, hand_over = getattr(self, f"{mode}_callers")()
        started = call("who", {"order": 7}, headers=alice).json()
        path = started["status_url"].removeprefix("http://testserver")
        assert path == f"/hooks/who/runs/{started['run_id']}/"
        extra = lambda headers: {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()}  # noqa: E731
        assert client.get(path, **extra(alice)).json()["status"] == "queued"
        hand_over()
        refused = client.get(path, **extra(bob))
        assert refused.status_code == 404 and refused.json() == {"error": "not_found"}
        own = call("who", {}, headers=bob).json()
        assert client.get(own["status_url"].removeprefix("http://testserver"), **extra(bob)).status_code == 200
