"""The OAuth2 server for callers: client-credentials JWTs from /o/token/ open JWT triggers."""

import base64

import jwt as pyjwt
import pytest
from django.urls import reverse
from oauth2_provider.models import AccessToken, get_application_model

from flows_app.models import ClientPolicy, FlowRun
from secrets_app.services.secrets import secret_create
from tests.flows_app.conftest import make_endpoint_flow

pytestmark = pytest.mark.django_db

CLIENT_SECRET = "client-secret-8e1f2a7c9d"


@pytest.fixture
def signer(settings):
    settings.BASE_URL = "https://flowgate.example.com"
    return secret_create(name="token-signer", kind="rs256", data={"generate": True, "publish": True})


def register(name, scopes, signer, lifetime=600, audience=""):
    application = get_application_model().objects.create(
        name=name,
        client_type="confidential",
        authorization_grant_type="client-credentials",
        client_secret=CLIENT_SECRET,
    )
    ClientPolicy.objects.create(
        application=application, scopes=scopes, signing_secret=signer, token_lifetime_seconds=lifetime, audience=audience
    )
    return application


def token_request(client, application, scope=None):
    basic = base64.b64encode(f"{application.client_id}:{CLIENT_SECRET}".encode()).decode()
    data = {"grant_type": "client_credentials", **({"scope": scope} if scope is not None else {})}
    return client.post("/o/token/", data, HTTP_AUTHORIZATION=f"Basic {basic}")


@pytest.fixture
def orders_hook(signer):
    make_endpoint_flow(
        "orders",
        {
            "path": "orders",
            "auth": {
                "kind": "jwt",
                "secret": "token-signer",
                "issuer": "https://flowgate.example.com",
                "audience": "https://flowgate.example.com",
                "scopes": ["orders:write"],
            },
        },
    )
    return "orders"


def test_a_client_gets_a_jwt_that_opens_a_trigger_needing_its_scope(client, call, signer, orders_hook):
    application = register("warehouse", "orders:read orders:write", signer)
    response = token_request(client, application, scope="orders:write")
    assert response.status_code == 200, response.content
    answer = response.json()
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 600 and answer["scope"] == "orders:write"

    # An independent library verifies it against the published JWKS.
    keys = client.get(reverse("secrets_app:jwks")).json()["keys"]
    header = pyjwt.get_unverified_header(answer["access_token"])
    public = pyjwt.PyJWK(next(key for key in keys if key["kid"] == header["kid"])).key
    claims = pyjwt.decode(answer["access_token"], public, algorithms=["RS256"], audience="https://flowgate.example.com")
    assert claims["iss"] == "https://flowgate.example.com" and claims["sub"] == application.client_id
    assert claims["scope"] == "orders:write" and claims["exp"] - claims["iat"] == 600

    opened = call(orders_hook, {"id": 1}, headers={"Authorization": f"Bearer {answer['access_token']}"})
    assert opened.status_code == 202
    assert FlowRun.objects.get().input["caller"]["subject"] == application.client_id
    assert AccessToken.objects.get().expires > AccessToken.objects.get().created


def test_the_same_client_without_the_scope_gets_403(client, call, signer, orders_hook):
    application = register("reporting", "orders:read orders:write", signer)
    token = token_request(client, application, scope="orders:read").json()["access_token"]
    response = call(orders_hook, {}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403 and 'error="insufficient_scope"' in response["WWW-Authenticate"]


def test_a_client_cannot_ask_for_scopes_beyond_its_policy(client, signer):
    application = register("reporting", "orders:read", signer)
    response = token_request(client, application, scope="orders:read orders:write")
    assert response.status_code == 400 and response.json()["error"] == "invalid_scope"


def test_asking_for_no_scope_gets_all_the_policy_allows(client, signer):
    application = register("all", "a:read b:write", signer)
    assert token_request(client, application).json()["scope"] == "a:read b:write"


def test_a_wrong_client_secret_gets_no_token(client, signer):
    application = register("warehouse", "orders:write", signer)
    basic = base64.b64encode(f"{application.client_id}:wrong".encode()).decode()
    response = client.post("/o/token/", {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=f"Basic {basic}")
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


def test_the_audience_and_lifetime_come_from_the_policy(client, signer):
    application = register("short", "x:y", signer, lifetime=120, audience="https://hooks.example.com")
    answer = token_request(client, application).json()
    claims = pyjwt.decode(answer["access_token"], options={"verify_signature": False})
    assert answer["expires_in"] == 120 and claims["aud"] == "https://hooks.example.com" and claims["exp"] - claims["iat"] == 120


def test_admins_register_clients_with_their_token_policy_in_the_admin(admin_client, signer):
    other = secret_create(name="hs", kind="hs256", data={"secret": "k" * 40})
    add = reverse("admin:oauth2_provider_application_add")
    page = admin_client.get(add).content.decode()
    assert "Token policy (JWT access tokens for endpoint triggers)" in page and f'value="{signer.pk}"' in page and f'value="{other.pk}"' not in page
    data = {
        "client_id": "warehouse-client",
        "client_secret": CLIENT_SECRET,
        "client_type": "confidential",
        "authorization_grant_type": "client-credentials",
        "name": "Warehouse",
        "algorithm": "",
        "redirect_uris": "",
        "post_logout_redirect_uris": "",
        "allowed_origins": "",
        "flowgate_policy-TOTAL_FORMS": "1",
        "flowgate_policy-INITIAL_FORMS": "0",
        "flowgate_policy-MIN_NUM_FORMS": "0",
        "flowgate_policy-MAX_NUM_FORMS": "1",
        "flowgate_policy-0-scopes": "orders:write orders:write",
        "flowgate_policy-0-audience": "",
        "flowgate_policy-0-token_lifetime_seconds": "900",
        "flowgate_policy-0-signing_secret": str(signer.pk),
    }
    response = admin_client.post(add, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    policy = ClientPolicy.objects.get(application__client_id="warehouse-client")
    assert policy.scopes == "orders:write" and policy.token_lifetime_seconds == 900
