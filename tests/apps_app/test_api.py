"""The connections API: connect links and connections for a SaaS builder's backend, with
client-credentials tokens from Flowgate's own OAuth2 server carrying the right scope."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from oauth2_provider.models import AccessToken

from apps_app.manifest import manifest_parse
from apps_app.models import ConnectLink
from apps_app.services.apps import app_install
from apps_app.services.connections import connection_create
from secrets_app.models import Secret
from secrets_app.services.secrets import secret_create
from tests.apps_app.conftest import notes_manifest
from tests.flows_app.test_oauth2_server import register, token_request

pytestmark = pytest.mark.django_db

RETURN_URL = "https://builder.example.com/settings/integrations"


@pytest.fixture
def notes_app(settings):
    settings.FLOWGATE_CONNECT_RETURN_URLS = ["https://builder.example.com/settings"]
    return app_install(manifest=manifest_parse(notes_manifest("http://127.0.0.1:9"))).app


@pytest.fixture
def token(client):
    """``token(scope)``: a client-credentials access token from /o/token/ with that scope."""
    signer = secret_create(name="api-signer", kind="rs256", data={"generate": True})
    application = register("builder", "connections:read connections:write", signer)

    def issue(scope: str) -> str:
        response = token_request(client, application, scope=scope)
        assert response.status_code == 200, response.content
        return response.json()["access_token"]

    return issue


def send(client, method, path, token=None, body=None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, str) else json.dumps(body) if body is not None else ""
    return client.generic(method, f"/api{path}", data=data, content_type="application/json", **headers)


class TestConnectLinks:
    def test_a_token_with_connections_write_gets_a_link_that_expires_in_an_hour(self, client, token, notes_app):
        body = {"app": "notes", "end_user": "customer-42", "return_url": RETURN_URL}
        response = send(client, "POST", "/connect-links", token("connections:write"), body)
        assert response.status_code == 201, response.content
        answer = response.json()
        assert answer["url"].startswith("http://testserver/connect/?link=")
        expires_at = parse_datetime(answer["expires_at"])
        assert timedelta(minutes=59) < expires_at - timezone.now() <= timedelta(hours=1)
        link = ConnectLink.objects.get()
        assert (link.app, link.end_user, link.return_url, link.reconnect) == (notes_app, "customer-42", RETURN_URL, False)
        assert link.expires_at == expires_at and link.used_at is None

    def test_the_lifetime_is_a_setting(self, client, token, notes_app, settings):
        settings.FLOWGATE_CONNECT_LINK_LIFETIME_SECONDS = 300
        answer = send(client, "POST", "/connect-links", token("connections:write"), {"app": "notes"}).json()
        assert parse_datetime(answer["expires_at"]) - timezone.now() <= timedelta(minutes=5)

    def test_a_reconnect_link_names_the_existing_connection(self, client, token, notes_app):
        connection = connection_create(app=notes_app, data={"api_key": "key-ann"}, end_user="customer-42")
        write = token("connections:write")
        response = send(client, "POST", f"/connections/{connection.pk}/connect-link", write, {"return_url": RETURN_URL})
        assert response.status_code == 201, response.content
        link = ConnectLink.objects.get()
        assert (link.connection, link.reconnect, link.end_user) == (connection, True, "customer-42")
        assert link.return_url == RETURN_URL
        without_body = send(client, "POST", f"/connections/{connection.pk}/connect-link", write)
        assert without_body.status_code == 201, without_body.content

    @pytest.mark.parametrize(
        "body, reason",
        [
            ({"app": "notes", "return_url": "https://evil.example.com/settings"}, "return URL is not allowed"),
            ({"app": "notes", "return_url": "https://builder.example.com.evil.example/settings"}, "not allowed"),
            ({"app": "notes", "return_url": "https://builder.example.com/settingsx"}, "not allowed"),
            ({"app": "notes", "return_url": "javascript:alert(1)"}, "not allowed"),
            ({"app": "notes", "end_user": "x" * 201}, "longer than 200"),
            ({"end_user": "customer-42"}, "app: Field required"),
            ({"app": ["notes"]}, "app:"),
            ("{not json", ""),
        ],
    )
    def test_bad_input_is_a_400_with_a_reason_and_makes_no_link(self, client, token, notes_app, body, reason):
        response = send(client, "POST", "/connect-links", token("connections:write"), body)
        assert response.status_code == 400, response.content
        assert reason in response.json()["detail"]
        assert not ConnectLink.objects.exists()

    def test_an_unknown_app_or_connection_is_a_404(self, client, token, notes_app):
        write = token("connections:write")
        response = send(client, "POST", "/connect-links", write, {"app": "crm"})
        assert response.status_code == 404 and response.json() == {"detail": "There is no installed app 'crm'."}
        assert send(client, "POST", "/connections/999999/connect-link", write, {}).status_code == 404
        assert send(client, "POST", "/connections/abc/connect-link", write, {}).status_code == 400


class TestAuthentication:
    def test_without_a_token_or_with_a_bad_one_the_answer_is_401(self, client, notes_app):
        for bearer in (None, "not-a-token"):
            response = send(client, "POST", "/connect-links", bearer, {"app": "notes"})
            assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
            assert send(client, "GET", "/connections", bearer).status_code == 401
        assert not ConnectLink.objects.exists()

    def test_an_expired_token_is_a_401(self, client, token, notes_app):
        write = token("connections:write")
        AccessToken.objects.update(expires=timezone.now() - timedelta(seconds=1))
        assert send(client, "POST", "/connect-links", write, {"app": "notes"}).status_code == 401

    def test_each_operation_needs_its_own_scope(self, client, token, notes_app):
        read, write = token("connections:read"), token("connections:write")
        refused = send(client, "POST", "/connect-links", read, {"app": "notes"})
        assert refused.status_code == 403 and "connections:write" in refused.json()["detail"]
        assert send(client, "POST", "/connections/1/connect-link", read, {}).status_code == 403
        refused = send(client, "GET", "/connections", write)
        assert refused.status_code == 403 and "connections:read" in refused.json()["detail"]
        assert send(client, "GET", "/connections", read).status_code == 200
        assert not ConnectLink.objects.exists()


class TestConnections:
    def test_lists_connections_by_app_end_user_and_status_and_never_a_value(self, client, token, notes_app):
        ann = connection_create(app=notes_app, data={"api_key": "key-ann-secret"}, end_user="customer-1")
        bob = connection_create(app=notes_app, data={"api_key": "key-bob-secret"}, end_user="customer-2")
        Secret.objects.filter(pk=ann.pk).update(status=Secret.Status.OK, identity="ann")
        Secret.objects.filter(pk=bob.pk).update(status=Secret.Status.FAILING, status_detail="Test flow run #7 failed: 401")
        read = token("connections:read")

        response = send(client, "GET", "/connections", read)
        assert response.status_code == 200
        assert "key-ann-secret" not in response.content.decode() and "key-bob-secret" not in response.content.decode()
        listed = {item["id"]: item for item in response.json()}
        assert listed[ann.pk] | {"created_at": None} == {
            "id": ann.pk,
            "app": "notes",
            "identity": "ann",
            "end_user": "customer-1",
            "status": "connected",
            "expires_at": None,
            "last_error": "",
            "created_at": None,
        }
        assert (listed[bob.pk]["status"], listed[bob.pk]["last_error"]) == ("failing", "Test flow run #7 failed: 401")

        def ids(query):
            return [item["id"] for item in send(client, "GET", f"/connections?{query}", read).json()]

        assert ids("end_user=customer-2") == [bob.pk]
        assert ids("status=failing") == [bob.pk]
        assert ids("app=notes&status=connected") == [ann.pk]
        assert ids("app=crm") == []

    def test_an_unknown_status_is_a_400(self, client, token, notes_app):
        response = send(client, "GET", "/connections?status=sleeping", token("connections:read"))
        assert response.status_code == 400 and "status" in response.json()["detail"]


class TestDescription:
    def test_the_openapi_schema_and_docs_page_are_served(self, client):
        schema = client.get("/api/openapi.json").json()
        assert {"/api/connect-links", "/api/connections", "/api/connections/{connection_id}/connect-link"} <= set(
            schema["paths"]
        )
        assert schema["paths"]["/api/connect-links"]["post"]["security"] == [{"ClientToken": []}]
        scheme = schema["components"]["securitySchemes"]["ClientToken"]
        assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
        assert "/o/token/" in scheme["description"]
        docs = client.get("/api/docs")
        assert docs.status_code == 200 and b"openapi.json" in docs.content
        assert b'src="/static/ninja/swagger-ui-bundle.js"' in docs.content  # this installation's copy, not a CDN's


class TestAccess:
    def test_a_reconnect_link_needs_a_client_whose_user_may_manage_the_connection(
        self, client, token, notes_app, staff_user
    ):
        connection = connection_create(app=notes_app, data={"api_key": "key-ann"}, acting_user=staff_user("ann"))
        write = token("connections:write")
        AccessToken.objects.get().application.__class__.objects.update(user=staff_user("mallory"))
        response = send(client, "POST", f"/connections/{connection.pk}/connect-link", write, {})
        assert response.status_code == 403 and "may not manage" in response.json()["detail"]
        assert not ConnectLink.objects.exists()
