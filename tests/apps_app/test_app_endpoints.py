"""Who may call an app's endpoint: its trigger's authentication decides, for every
connection of the app. The README's advice for callers who should reach only their own
connection (a JWT naming it, checked by the flow's first step) is specified here."""

import pytest
import yaml

from apps_app.manifest import manifest_parse
from apps_app.services.apps import app_install
from apps_app.services.connections import connection_create
from secrets_app import api
from secrets_app.services.secrets import secret_create
from tests.servers import Reply


def manifest(api_url: str, first_steps: list[dict]) -> str:
    steps = [
        *first_steps,
        {"key": "page", "kind": "http_request", "url": f"{api_url}/notes",
         "headers": {"X-Api-Key": "{{ connection.api_key }}"}},
        {"key": "reply", "kind": "respond", "status": 200, "body": "{{ steps.page.body }}"},
    ]
    endpoint = {"kind": "endpoint", "path": "notes", "methods": ["GET"], "auth": {"kind": "jwt", "secret": "customers"}}
    return yaml.safe_dump({
        "app": {"slug": "notes", "name": "Notes", "version": "1.0.0"},
        "connection": {"kind": "generic", "fields": [{"key": "api_key", "label": "API key", "sensitive": True}]},
        "flows": {"list-notes": {"public": True, "steps": steps, "triggers": [{**endpoint, "response": "sync"}]}},
    })  # fmt: skip


#: The check the README recommends: the caller's JWT names its connection.
OWN_CONNECTION_ONLY = yaml.safe_load(
    """
    - {key: check, kind: condition, expression: "trigger.caller.claims.connection == connection.id",
       then: page, otherwise: continue}
    - {key: denied, kind: respond, status: 403, body: {error: not your connection}}
    - {key: stop, kind: condition, expression: "false"}
    """
)


@pytest.fixture
def notes_api(local_server):
    owners = {"key-a": "a", "key-b": "b"}
    local_server.handler = lambda request: Reply(200, {"notes": [f"note of {owners[request.headers['X-Api-Key']]}"]})
    return local_server


@pytest.fixture
def install(transactional_db, notes_api):
    """``install(first_steps)``: the app, with those steps first in its public flow, and two
    customers' connections; returns them."""

    def make(first_steps: list[dict] = ()):
        secret_create(name="customers", kind="hs256", data={"secret": "customers-signing-key-0123456789abcdef"})
        app = app_install(manifest=manifest_parse(manifest(notes_api.url, list(first_steps)))).app
        a = connection_create(app=app, data={"api_key": "key-a"}, end_user="a")
        return a, connection_create(app=app, data={"api_key": "key-b"}, end_user="b")

    return make


def token(connection) -> str:
    return api.sign_jws("customers", {"sub": connection.end_user, "connection": connection.pk})


@pytest.mark.django_db(transaction=True)
class TestWhoMayCallAnAppsEndpoint:
    def test_the_trigger_alone_decides_so_a_caller_reaches_every_connection(self, install, client, celery_worker):
        a, b = install()
        as_a = {"HTTP_AUTHORIZATION": f"Bearer {token(a)}"}
        assert client.get(f"/hooks/apps/notes/{a.pk}/notes", **as_a).json() == {"notes": ["note of a"]}
        assert client.get(f"/hooks/apps/notes/{b.pk}/notes", **as_a).json() == {"notes": ["note of b"]}

    def test_a_jwt_naming_its_connection_reaches_only_that_one(self, install, client, notes_api, celery_worker):
        a, b = install(OWN_CONNECTION_ONLY)
        as_a = {"HTTP_AUTHORIZATION": f"Bearer {token(a)}"}
        own = client.get(f"/hooks/apps/notes/{a.pk}/notes", **as_a)
        assert (own.status_code, own.json()) == (200, {"notes": ["note of a"]})
        other = client.get(f"/hooks/apps/notes/{b.pk}/notes", **as_a)
        assert (other.status_code, other.json()) == (403, {"error": "not your connection"})
        assert [request.headers["X-Api-Key"] for request in notes_api.requests] == ["key-a"]
