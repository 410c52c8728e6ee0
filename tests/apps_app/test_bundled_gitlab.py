"""The bundled GitLab app (apps/gitlab), end to end: django-oauth-toolkit plays GitLab's
OAuth2 server, and a local GitLab API checks every call's token against the provider's
own tokens, so each answer is for the account whose token came with the call.

The manifest names https://gitlab.com as it ships. The tests install it as the README tells
the operator of a self-managed GitLab to: the same folder with gitlab.com replaced by the
instance's addresses (here two: the provider's issuer, and the local API), the app
registered at the provider with the redirect URI BASE_URL/apps/gitlab/oauth2/callback/
and its client given to Flowgate through FLOWGATE_APP_GITLAB_CLIENT_ID/_CLIENT_SECRET.
"""

import hashlib
import json
import shutil
from datetime import timedelta
from io import StringIO
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.management import call_command
from django.db import connection as db
from django.utils import timezone
from oauth2_provider.models import AccessToken

from apps_app.models import App
from apps_app.services.apps import connection_secret_data
from apps_app.services.connections import connection_create
from flows_app.models import Flow, FlowRun
from flows_app.services.runs import RunNotAllowed, flow_run_inline, flow_run_start
from secrets_app.models import OAuth2Connection, Secret
from secrets_app.services.secrets import secret_create
from tests.conftest import REPOSITORY
from tests.provider import Browser, provider_application
from tests.servers import Reply

APP_FOLDER = REPOSITORY / "apps" / "gitlab"
CALLERS_KEY = "callers-key-for-gitlab-tests"
PROJECTS = {"ann": ["acme/backend", "ann/website"], "bob": ["bob/dotfiles"]}
ISSUES = [
    {"title": "Fix the login page", "project": "acme/backend", "assignee": "ann"},
    {"title": "Upgrade Django", "project": "acme/backend", "assignee": "bob"},
    {"title": "Rotate the deploy key", "project": "bob/dotfiles", "assignee": "bob"},
]


def token_owner(request, scope: str) -> str | None:
    """The user name of the provider's valid access token in the call, with ``scope``."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme != "Bearer" or not token:
        return None
    try:
        checksum = hashlib.sha256(token.encode()).hexdigest()
        access = AccessToken.objects.select_related("user").filter(token_checksum=checksum).first()
        return access.user.username if access is not None and access.is_valid([scope]) else None
    finally:
        db.close()  # this runs in the server's thread, with a connection of its own


@pytest.fixture
def gitlab_api(local_server):
    """GitLab's REST API (/api/v4) as far as the app uses it."""

    def answer(request):
        url = urlsplit(request.path)
        query = {name: values[0] for name, values in parse_qs(url.query).items()}
        user = token_owner(request, "read_user" if url.path == "/api/v4/user" else "read_api")
        if user is None:
            return Reply(401, {"message": "401 Unauthorized"})
        if url.path == "/api/v4/user":
            return Reply(200, {"id": 1, "username": user, "name": user.title(), "state": "active"})
        if url.path == "/api/v4/projects" and query.get("membership") == "true":
            return Reply(200, [{"id": index, "path_with_namespace": path} for index, path in enumerate(PROJECTS[user])])
        if url.path == "/api/v4/issues" and query.get("scope") == "all" and query.get("state") == "opened":
            visible = [issue for issue in ISSUES if issue["project"] in PROJECTS[user]]
            return Reply(200, [issue for issue in visible if issue["assignee"] == query.get("assignee_username")])
        return Reply(404, {"message": "404 Not Found"})

    local_server.handler = answer
    return local_server


@pytest.fixture
def gitlab(provider, gitlab_api, settings, monkeypatch, tmp_path):
    """The app installed from its folder, pointed at the provider and the local API, with
    its client registered at the provider and given to Flowgate through the environment."""
    settings.OAUTH2_PROVIDER = {
        **settings.OAUTH2_PROVIDER,
        "SCOPES": {**settings.OAUTH2_PROVIDER["SCOPES"], "read_user": "Read your profile", "read_api": "Read the API"},
    }
    redirect_uri = f"{provider.url}/apps/gitlab/oauth2/callback/"
    client_id, client_secret = provider_application(name="gitlab", redirect_uri=redirect_uri)
    monkeypatch.setenv("FLOWGATE_APP_GITLAB_CLIENT_ID", client_id)
    monkeypatch.setenv("FLOWGATE_APP_GITLAB_CLIENT_SECRET", client_secret)
    secret_create(name="gitlab-callers", kind="api_token", data={"token": CALLERS_KEY})
    folder = tmp_path / "gitlab"
    shutil.copytree(APP_FOLDER, folder)
    manifest = (folder / "app.yaml").read_text()
    manifest = manifest.replace("https://gitlab.com/api/v4", f"{gitlab_api.url}/api/v4")
    manifest = manifest.replace("https://gitlab.com", provider.issuer)
    (folder / "app.yaml").write_text(manifest)
    call_command("app", "install", str(folder), stdout=StringIO())
    return App.objects.get(slug="gitlab")


@pytest.fixture
def person(provider, staff_user):
    """``person(name)``: a Flowgate user who is also an account at the provider, logged in
    to both in one browser."""

    def make(name: str):
        user = staff_user(name)
        browser = Browser(provider.url)
        browser.login(name, "pw")
        return user, browser

    return make


def connect(app: App, user, browser: Browser):
    """Add a connection as ``user`` and go through the authorization code flow with it."""
    connection = connection_create(app=app, acting_user=user)
    at_provider = browser.start(connection.secret.name)
    back = browser.answer(at_provider)
    assert urlsplit(back).path == "/apps/gitlab/oauth2/callback/", back
    browser.get(back)  # the shared callback: exchanges the code, then runs the test flow
    connection.secret.refresh_from_db()
    return connection


def run_flow(flow: str, connection) -> dict:
    out = StringIO()
    call_command("run_flow", flow, "--connection", str(connection.pk), "--wait", "--timeout", "60", stdout=out)
    return json.loads(out.getvalue())


@pytest.mark.django_db(transaction=True)
class TestInstall:
    def test_installs_as_shipped_with_the_standard_operations(self, transactional_db):
        secret_create(name="gitlab-callers", kind="api_token", data={"token": CALLERS_KEY})
        call_command("app", "install", str(APP_FOLDER), stdout=StringIO())
        app = App.objects.get(slug="gitlab")
        assert (app.name, app.connection_kind, app.client_id) == ("GitLab", "oauth2", "")
        assert app.icon.startswith("data:image/svg+xml;base64,")
        assert set(Flow.objects.filter(app_slug="gitlab").values_list("slug", flat=True)) == {
            "gitlab/connection-test", "gitlab/list-projects", "gitlab/my-issues",
        }  # fmt: skip
        data = connection_secret_data(app)
        assert (data["issuer"], data["scope"]) == ("https://gitlab.com", "openid read_user read_api")
        assert data["operations"] == {}  # the standard authorization, exchange and refresh
        assert data["redirect_uri"].endswith("/apps/gitlab/oauth2/callback/")

    def test_the_client_comes_from_the_environment(self, gitlab):
        assert gitlab.client_id == "client-gitlab"
        assert gitlab.client_values["client_secret"] == "provider-client-secret-gitlab-0123456789"


@pytest.mark.django_db(transaction=True)
class TestConnecting:
    def test_the_authorization_code_flow_connects_and_the_test_flow_names_the_account(self, gitlab, person, provider):
        ann, browser = person("ann")
        connection = connect(gitlab, ann, browser)
        oauth2 = OAuth2Connection.objects.get(secret=connection.secret)
        assert (oauth2.status, oauth2.identity) == (OAuth2Connection.Status.CONNECTED, "ann")
        assert set(oauth2.granted_scope.split()) == {"openid", "read_user", "read_api"}
        assert (connection.secret.status, connection.secret.identity) == (Secret.Status.OK, "ann")
        assert connection.secret.owner == ann
        exchange = provider.log.grants("authorization_code")
        assert len(exchange) == 1 and "code_verifier" in exchange[0].fields  # PKCE
        test_run = FlowRun.objects.get(flow__slug="gitlab/connection-test")
        assert (test_run.status, test_run.connection_id) == (FlowRun.Status.SUCCEEDED, connection.pk)
        assert test_run.output == {"identity": "ann"}


@pytest.mark.django_db(transaction=True)
class TestTwoPeopleTwoConnections:
    def test_each_run_uses_its_own_connections_token(self, gitlab, person, gitlab_api, client, celery_worker):
        ann_connection, bob_connection = connect(gitlab, *person("ann")), connect(gitlab, *person("bob"))
        ann_projects = run_flow("gitlab/list-projects", ann_connection)
        bob_projects = run_flow("gitlab/list-projects", bob_connection)
        assert ann_projects["status"] == "succeeded", ann_projects["error"]
        assert ann_projects["response"]["body"] == {"projects": PROJECTS["ann"]}
        assert bob_projects["response"]["body"] == {"projects": PROJECTS["bob"]}
        ann_issues = run_flow("gitlab/my-issues", ann_connection)["response"]["body"]
        bob_issues = run_flow("gitlab/my-issues", bob_connection)["response"]["body"]
        assert ann_issues == {"assignee": "ann", "issues": ["Fix the login page"]}
        assert bob_issues == {"assignee": "bob", "issues": ["Rotate the deploy key"]}  # not acme's: not his project

        key = {"HTTP_X_API_KEY": CALLERS_KEY}
        for connection, name in ((ann_connection, "ann"), (bob_connection, "bob")):
            response = client.get(f"/hooks/apps/gitlab/{connection.pk}/projects", **key)
            assert response.status_code == 200, response.content
            assert response.json() == {"projects": PROJECTS[name]}
        assert client.get(f"/hooks/apps/gitlab/{ann_connection.pk}/my-issues", **key).json()["assignee"] == "ann"
        tokens = {request.headers["Authorization"] for request in gitlab_api.requests}
        assert len(tokens) == 2  # one per connection, each checked by the API on every call

    def test_a_person_cannot_run_a_flow_with_someone_elses_connection(self, gitlab, person):
        ann, ann_browser = person("ann")
        bob, _ = person("bob")
        connection = connect(gitlab, ann, ann_browser)
        flow = Flow.objects.get(slug="gitlab/list-projects")
        with pytest.raises(RunNotAllowed, match="holds no use grant"):
            flow_run_start(flow=flow, input={}, connection=connection.secret, acting_user=bob)

    def test_an_expired_token_is_refreshed_at_the_provider_before_the_call(self, gitlab, person, provider):
        connection = connect(gitlab, *person("ann"))
        expired = timezone.now() - timedelta(seconds=1)
        OAuth2Connection.objects.filter(secret=connection.secret).update(expires_at=expired)
        flow = Flow.objects.get(slug="gitlab/list-projects")
        run = flow_run_inline(flow=flow, input={}, connection=connection.secret, trigger="test", timeout=30)
        assert run.status == FlowRun.Status.SUCCEEDED, run.error
        assert run.response["body"] == {"projects": PROJECTS["ann"]}
        assert len(provider.log.grants("refresh_token")) == 1
