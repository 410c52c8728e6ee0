"""Connect links, end to end, as the person who opens one: an anonymous browser (headless
Chromium) with no account here. A generic app's fields, and an OAuth2 app against
django-oauth-toolkit; success, expired, reused, tampered, denied, return URL not allowed.

The provider is the live server under another host name (127.0.0.1 where Flowgate is
localhost), so that signing in at the provider does not sign the person in here: they stay
anonymous to Flowgate, with a session of their own, as with a real provider.
"""

import textwrap
from types import SimpleNamespace
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.core.management import CommandError, call_command

from apps_app.manifest import manifest_parse
from apps_app.models import Connection, ConnectLink
from apps_app.services.apps import app_install, app_registration_set
from apps_app.services.connect_links import connect_link_create, connect_link_scopes
from secrets_app.models import OAuth2AuthorizationRequest, OAuth2Connection, Secret
from tests.apps_app.conftest import notes_manifest
from tests.conftest import OWNER, screenshot
from tests.provider import provider_application

pytestmark = pytest.mark.django_db(transaction=True)

RETURN_PREFIX = "https://builder.example.com/integrations"


@pytest.fixture
def flowgate(live_server, settings):
    """Flowgate on the live server; return URLs under RETURN_PREFIX allowed."""
    settings.BASE_URL = live_server.url
    settings.FLOWGATE_CONNECT_RETURN_URLS = [RETURN_PREFIX]
    return live_server.url


@pytest.fixture
def builder_site(page):
    """The builder's own site, where a return URL leads: the browser's requests there are
    answered here, and recorded."""
    visits = []

    def answer(route):
        visits.append(route.request.url)
        route.fulfill(status=200, content_type="text/html", body="<h1>Back at the builder's product</h1>")

    page.route(f"{RETURN_PREFIX}/**", answer)
    return visits


def returned(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def make_link(app_slug: str, **options) -> str:
    """A link as ``manage.py connect_link`` prints it."""
    from io import StringIO

    out = StringIO()
    call_command("connect_link", app_slug, stdout=out, **options)
    url, expiry = out.getvalue().splitlines()
    assert expiry.startswith("Expires at ")
    return url


# -- a generic app ----------------------------------------------------------------------------


@pytest.fixture
def notes(flowgate, notes_api):
    return app_install(manifest=manifest_parse(notes_manifest(notes_api.url))).app


class TestGenericApp:
    def test_the_person_fills_the_fields_and_sees_connected_as_their_account(self, page, notes, owner):
        url = connect_link_create(app=notes, end_user="customer-42", acting_user=owner).url
        page.goto(url)
        assert page.locator("h1").inner_text() == "Connect your account to Notes"
        assert page.get_by_label("API key").get_attribute("type") == "password"
        page.get_by_label("API key").fill("key-ann")
        page.get_by_label("Region").select_option("us")
        screenshot(page, "connect-link-generic", walkthrough=True)
        page.get_by_role("button", name="Connect").click()
        assert page.get_by_role("status").inner_text() == "Connected as ann."

        connection = Connection.objects.select_related("secret").get()
        assert (connection.app, connection.end_user) == (notes, "customer-42")
        assert (connection.secret.owner, connection.secret.identity) == (owner, "ann")
        assert connection.secret.values["secret"] == {"api_key": "key-ann"}
        assert connection.secret.config["public"] == {"region": "us"}
        assert ConnectLink.objects.get().used_at is not None

    def test_with_a_return_url_the_person_is_sent_back_with_the_connection_id(self, page, notes, builder_site):
        page.goto(make_link("notes", end_user="customer-7", return_url=f"{RETURN_PREFIX}/done?tab=apps"))
        page.get_by_label("API key").fill("key-bob")
        page.get_by_role("button", name="Connect").click()
        page.wait_for_url(f"{RETURN_PREFIX}/done?**")
        connection = Connection.objects.get()
        assert returned(builder_site[-1]) == {"tab": "apps", "connection_id": str(connection.pk), "status": "connected"}
        assert connection.end_user == "customer-7" and connection.secret.owner is None  # the operator's

    def test_a_failed_test_keeps_nothing_and_the_person_can_correct_the_fields(self, page, notes):
        page.goto(make_link("notes"))
        page.get_by_label("API key").fill("wrong-key")
        page.get_by_role("button", name="Connect").click()
        assert "Notes could not use it" in page.get_by_role("alert").inner_text()
        assert "401" in page.get_by_role("alert").inner_text()
        assert not Connection.objects.exists() and not Secret.objects.exists()
        assert ConnectLink.objects.get().used_at is None

        page.get_by_label("API key").fill("key-ann")
        page.get_by_role("button", name="Connect").click()
        assert page.get_by_role("status").inner_text() == "Connected as ann."

    def test_a_link_used_once_cannot_be_used_again(self, page, notes):
        url = make_link("notes")
        page.goto(url)
        page.get_by_label("API key").fill("key-ann")
        page.get_by_role("button", name="Connect").click()
        page.get_by_role("status").wait_for()

        response = page.goto(url)
        assert response.status == 410
        assert "already used" in page.get_by_role("alert").inner_text()
        screenshot(page, "connect-link-used")
        assert Connection.objects.count() == 1

    def test_a_second_tab_posting_the_same_link_changes_nothing(self, page, notes):
        url = make_link("notes")
        page.goto(url)
        second = page.context.new_page()
        second.goto(url)
        for tab, key in ((page, "key-ann"), (second, "key-bob")):
            tab.get_by_label("API key").fill(key)
            tab.get_by_role("button", name="Connect").click()
        assert "already used" in second.get_by_role("alert").inner_text()
        assert Connection.objects.get().secret.values["secret"] == {"api_key": "key-ann"}

    def test_an_expired_link_shows_why_and_changes_nothing(self, page, notes, settings):
        settings.FLOWGATE_CONNECT_LINK_LIFETIME_SECONDS = 0  # expired as soon as it is made
        response = page.goto(make_link("notes"))
        assert response.status == 410 and "expired" in page.get_by_role("alert").inner_text()
        assert page.locator("form").count() == 0

    def test_a_tampered_link_is_refused(self, page, notes, flowgate):
        url = make_link("notes", end_user="customer-1")
        token = returned(url)["link"]
        body, signature = token.rsplit(":", 1)
        changed = f"{body[:-2]}{'AB' if body[-2:] != 'AB' else 'CD'}:{signature}"
        for forged in (changed, token[:-5], "x", ""):
            response = page.goto(f"{flowgate}/connect/?{urlencode({'link': forged})}")
            assert response.status == 400 and "not valid" in page.get_by_role("alert").inner_text()
        assert ConnectLink.objects.get().used_at is None and not Connection.objects.exists()

    def test_a_return_url_not_allowed_is_refused_when_made_and_when_opened(self, page, notes, settings):
        with pytest.raises(CommandError, match="return URL is not allowed"):
            make_link("notes", return_url="https://evil.example.com/integrations")
        url = make_link("notes", return_url=f"{RETURN_PREFIX}/done")
        settings.FLOWGATE_CONNECT_RETURN_URLS = ["https://elsewhere.example.com"]
        response = page.goto(url)
        assert response.status == 400 and "no longer allowed" in page.get_by_role("alert").inner_text()

    def test_a_reconnect_link_changes_the_same_connection(self, page, notes):
        first = make_link("notes", end_user="customer-1")
        page.goto(first)
        page.get_by_label("API key").fill("key-ann")
        page.get_by_role("button", name="Connect").click()
        page.get_by_role("status").wait_for()
        connection = Connection.objects.get()

        page.goto(make_link("notes", connection=connection.pk))
        assert "connects your account again" in page.content()
        page.get_by_label("API key").fill("key-bob")
        page.get_by_role("button", name="Connect").click()
        assert page.get_by_role("status").inner_text() == "Connected as bob."
        assert Connection.objects.get().pk == connection.pk
        assert Connection.objects.get().secret.values["secret"] == {"api_key": "key-bob"}

    def test_the_form_is_csrf_protected(self, notes, live_server):
        import requests

        url = make_link("notes")
        response = requests.post(url, data={"api_key": "key-ann"}, allow_redirects=False)
        assert response.status_code == 403
        assert not Connection.objects.exists() and ConnectLink.objects.get().used_at is None


# -- an OAuth2 app at django-oauth-toolkit ----------------------------------------------------


def crm_manifest(provider) -> str:
    return textwrap.dedent(
        f"""
        app:
          slug: crm
          name: CRM
          version: 1.0.0
          description: Contacts from the CRM.
        connection:
          kind: oauth2
          issuer: {provider.issuer}
          authorize_url: {provider.url}/o/authorize/
          token_url: {provider.url}/o/token/
          revocation_url: {provider.url}/o/revoke_token/
          userinfo_url: {provider.url}/o/userinfo/
          scope: openid email read offline_access
          test: whoami
        flows:
          whoami:
            steps:
              - {{key: me, kind: http_request, method: GET, url: "{provider.url}/o/userinfo/", secret: connection}}
              - {{key: out, kind: transform, value: {{identity: "{{{{ steps.me.body.email }}}}"}}}}
          profile:
            public: true
            steps:
              - {{key: me, kind: http_request, method: GET, url: "{provider.url}/o/userinfo/", secret: connection}}
              - {{key: reply, kind: respond, status: 200, body: {{email: "{{{{ steps.me.body.email }}}}"}}}}
            triggers:
              - {{kind: endpoint, path: profile, methods: [GET], auth: {{kind: open}}, response: sync}}
        """
    )


@pytest.fixture
def crm(flowgate, owner):
    """The CRM app, registered at django-oauth-toolkit, reached as 127.0.0.1 (Flowgate is localhost)."""
    url = flowgate.replace("localhost", "127.0.0.1")
    provider = SimpleNamespace(url=url, issuer=f"{url}/o")
    assert url != flowgate
    app = app_install(manifest=manifest_parse(crm_manifest(provider))).app
    client_id, client_secret = provider_application(name="crm", redirect_uri=f"{flowgate}/apps/crm/oauth2/callback/")
    app_registration_set(app=app, client_id=client_id, client_secret=client_secret)
    return app


def sign_in_at_the_provider(page, *, allow: bool = True) -> None:
    """At the provider: sign in as the account holder, then allow or refuse."""
    page.wait_for_url("**/admin/login/**")
    page.fill("#id_username", OWNER["username"])
    page.fill("#id_password", OWNER["password"])
    page.click("input[type=submit]")
    page.wait_for_url(lambda url: urlsplit(url).path == "/o/authorize/")
    page.click("input[name=allow]" if allow else "input[value=Cancel]")


class TestOAuth2App:
    def test_the_person_signs_in_at_the_provider_and_sees_connected_as_their_account(self, page, crm):
        page.goto(make_link("crm", end_user="customer-42"))
        assert page.locator("h1").inner_text() == "Connect your account to CRM"
        scopes = page.locator("ul.scopes li").all_inner_texts()
        assert scopes == [
            "Confirm who you are (openid)",
            "See your e-mail address (email)",
            "read",
            "Stay connected when you are not using it (offline_access)",
        ]
        screenshot(page, "connect-link-oauth2", walkthrough=True)
        page.get_by_role("button", name="Continue to sign in").click()
        sign_in_at_the_provider(page)
        assert page.get_by_role("status").inner_text() == f"Connected as {OWNER['email']}."
        screenshot(page, "connect-link-connected", walkthrough=True)

        connection = Connection.objects.select_related("secret").get()
        assert connection.end_user == "customer-42" and connection.secret.identity == OWNER["email"]
        tokens = OAuth2Connection.objects.get(secret=connection.secret)
        assert tokens.status == OAuth2Connection.Status.CONNECTED and tokens.has_refresh_token
        attempt = OAuth2AuthorizationRequest.objects.get()
        assert attempt.user is None and attempt.bound_to == f"connect-link:{ConnectLink.objects.get().pk}"
        assert attempt.pkce["code_verifier"]  # PKCE as for any authorization

    def test_with_a_return_url_the_person_is_sent_back_with_the_connection_id(self, page, crm, builder_site):
        page.goto(make_link("crm", return_url=f"{RETURN_PREFIX}/done"))
        page.get_by_role("button", name="Continue to sign in").click()
        sign_in_at_the_provider(page)
        page.wait_for_url(f"{RETURN_PREFIX}/done?**")
        assert returned(builder_site[-1]) == {"connection_id": str(Connection.objects.get().pk), "status": "connected"}

    def test_denied_at_the_provider_keeps_nothing_and_the_link_can_be_tried_again(self, page, crm):
        url = make_link("crm")
        page.goto(url)
        page.get_by_role("button", name="Continue to sign in").click()
        sign_in_at_the_provider(page, allow=False)
        assert "denied at the provider" in page.get_by_role("status").inner_text()
        assert not Connection.objects.exists() and not Secret.objects.filter(app_slug="crm").exists()
        assert ConnectLink.objects.get().used_at is None

        page.get_by_role("link", name="Try again").click()
        page.get_by_role("button", name="Continue to sign in").click()
        page.wait_for_url("**/o/authorize/**")  # signed in at the provider already
        page.click("input[name=allow]")
        assert page.get_by_role("status").inner_text() == f"Connected as {OWNER['email']}."

    def test_denied_with_a_return_url_sends_the_person_back_with_status_denied(self, page, crm, builder_site):
        page.goto(make_link("crm", return_url=f"{RETURN_PREFIX}/done"))
        page.get_by_role("button", name="Continue to sign in").click()
        sign_in_at_the_provider(page, allow=False)
        page.wait_for_url(f"{RETURN_PREFIX}/done?**")
        assert returned(builder_site[-1]) == {"status": "denied"}
        assert not Connection.objects.exists()

    def test_a_link_used_once_cannot_start_again(self, page, crm):
        url = make_link("crm")
        page.goto(url)
        page.get_by_role("button", name="Continue to sign in").click()
        sign_in_at_the_provider(page)
        page.get_by_role("status").wait_for()
        response = page.goto(url)
        assert response.status == 410 and "already used" in page.get_by_role("alert").inner_text()

    def test_the_callback_completes_only_in_the_browser_session_that_opened_the_link(self, page, crm, chromium):
        # The provider's redirect back is held (its answer to "Authorize" is fetched without
        # following it), so that another browser can try the callback first.
        held = []

        def hold(route):
            if route.request.method != "POST":
                return route.continue_()
            answer = route.fetch(max_redirects=0)
            held.append(answer.headers["location"])
            route.fulfill(status=200, content_type="text/html", body="<p>held</p>")

        page.route(lambda url: urlsplit(url).path == "/o/authorize/", hold)
        page.goto(make_link("crm"))
        page.get_by_role("button", name="Continue to sign in").click()
        sign_in_at_the_provider(page)
        page.get_by_text("held").wait_for()
        [callback] = held
        assert "/apps/crm/oauth2/callback/?" in callback

        other = chromium.new_context().new_page()
        response = other.goto(callback)
        assert response.status == 400 and "another browser" in other.get_by_role("alert").inner_text()
        assert not OAuth2Connection.objects.filter(status=OAuth2Connection.Status.CONNECTED).exists()
        other.context.close()

        page.goto(callback)
        assert page.get_by_role("status").inner_text() == f"Connected as {OWNER['email']}."

    def test_two_links_started_in_one_browser_both_complete(self, page, crm):
        first, second = page, page.context.new_page()
        first.goto(make_link("crm", end_user="customer-1"))
        first.get_by_role("button", name="Continue to sign in").click()
        first.wait_for_url("**/admin/login/**")
        first.fill("#id_username", OWNER["username"])
        first.fill("#id_password", OWNER["password"])
        first.click("input[type=submit]")
        first.wait_for_url(lambda url: urlsplit(url).path == "/o/authorize/")
        second.goto(make_link("crm", end_user="customer-2"))
        second.get_by_role("button", name="Continue to sign in").click()
        second.wait_for_url(lambda url: urlsplit(url).path == "/o/authorize/")  # signed in at the provider

        for tab in (second, first):  # answered in the other order than started
            tab.click("input[name=allow]")
            assert tab.get_by_role("status").inner_text() == f"Connected as {OWNER['email']}."
        assert sorted(Connection.objects.values_list("end_user", flat=True)) == ["customer-1", "customer-2"]

    def test_a_reconnect_link_keeps_the_connection_id_and_stores_new_tokens(self, page, crm):
        page.goto(make_link("crm", end_user="customer-42"))
        page.get_by_role("button", name="Continue to sign in").click()
        sign_in_at_the_provider(page)
        page.get_by_role("status").wait_for()
        connection = Connection.objects.get()
        first_tokens = OAuth2Connection.objects.get(secret_id=connection.pk).tokens["access_token"]

        page.goto(make_link("crm", connection=connection.pk))
        page.get_by_role("button", name="Continue to sign in").click()
        page.wait_for_url("**/o/authorize/**")
        page.click("input[name=allow]")
        assert page.get_by_role("status").inner_text() == f"Connected as {OWNER['email']}."
        assert list(Connection.objects.values_list("pk", "end_user")) == [(connection.pk, "customer-42")]
        assert OAuth2Connection.objects.get(secret_id=connection.pk).tokens["access_token"] != first_tokens

    def test_a_reconnect_denied_keeps_the_connection_and_its_tokens(self, page, crm):
        page.goto(make_link("crm"))
        page.get_by_role("button", name="Continue to sign in").click()
        sign_in_at_the_provider(page)
        page.get_by_role("status").wait_for()
        connection = Connection.objects.get()
        tokens = OAuth2Connection.objects.get(secret_id=connection.pk).tokens

        page.goto(make_link("crm", connection=connection.pk))
        page.get_by_role("button", name="Continue to sign in").click()
        page.wait_for_url("**/o/authorize/**")
        page.click("input[value=Cancel]")
        assert "denied at the provider" in page.get_by_role("status").inner_text()
        kept = OAuth2Connection.objects.get(secret_id=connection.pk)
        assert kept.tokens == tokens and kept.status == OAuth2Connection.Status.CONNECTED


class TestScopesInWords:
    def test_a_presets_scopes_are_listed_in_its_words_and_unknown_ones_by_name(self, flowgate):
        manifest = textwrap.dedent(
            """
            app: {slug: tweets, name: Tweets, version: 1.0.0}
            connection: {kind: oauth2, preset: x}
            flows:
              noop: {steps: [{key: out, kind: transform, value: {ok: true}}]}
            """
        )
        app = app_install(manifest=manifest_parse(manifest)).app
        assert connect_link_scopes(app) == [
            ("tweet.read", "Read your posts and timeline"),
            ("users.read", "See your profile"),
            ("offline.access", "Stay connected when you are not using it"),
        ]
        app.manifest["connection"]["scope"] = "tweet.read like.write"
        assert connect_link_scopes(app) == [("tweet.read", "Read your posts and timeline"), ("like.write", "")]


class TestSaasBuilderJourney:
    def test_the_backend_asks_for_a_link_the_customer_connects_and_a_flow_runs_with_their_account(
        self, page, crm, flowgate, celery_worker
    ):
        import requests

        from secrets_app.services.secrets import secret_create
        from tests.flows_app.test_oauth2_server import CLIENT_SECRET, register

        http = requests.Session()
        http.trust_env = False
        # The builder's backend: a client-credentials token from Flowgate's /o/token/, then a link.
        signer = secret_create(name="api-signer", kind="rs256", data={"generate": True})
        backend = register("builder-backend", "connections:read connections:write", signer)
        token = http.post(
            f"{flowgate}/o/token/",
            data={"grant_type": "client_credentials", "scope": "connections:read connections:write"},
            auth=(backend.client_id, CLIENT_SECRET),
        ).json()["access_token"]
        api = {"Authorization": f"Bearer {token}"}
        answer = http.post(
            f"{flowgate}/api/connect-links", json={"app": "crm", "end_user": "customer-42"}, headers=api
        )
        assert answer.status_code == 201, answer.text

        # The customer, with no account here, opens it and connects.
        page.goto(answer.json()["url"])
        page.get_by_role("button", name="Continue to sign in").click()
        sign_in_at_the_provider(page)
        assert page.get_by_role("status").inner_text() == f"Connected as {OWNER['email']}."

        # The backend finds the connection by its reference, and runs the app's flow with it.
        [listed] = http.get(f"{flowgate}/api/connections", params={"end_user": "customer-42"}, headers=api).json()
        assert (listed["app"], listed["identity"], listed["status"]) == ("crm", OWNER["email"], "connected")
        profile = http.get(f"{flowgate}/hooks/apps/crm/{listed['id']}/profile", timeout=60)
        assert profile.status_code == 200 and profile.json() == {"email": OWNER["email"]}
