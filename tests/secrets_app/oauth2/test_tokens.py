"""Using and keeping tokens: refresh on use, rotation, failures, revocation."""

import time
from contextlib import contextmanager
from datetime import datetime, timedelta

import pytest
from celery.signals import before_task_publish
from django.utils import timezone
import requests
from oauth2_provider.models import AccessToken, RefreshToken

from project import outbound
from project.celery import app as celery_app
from secrets_app import api, signals
from secrets_app.exceptions import NotConnected, ReauthorizationRequired, TokenEndpointUnavailable
from secrets_app.models import AuditEvent, OAuth2Connection, Secret
from secrets_app.services.oauth2 import oauth2_connection_revoke, oauth2_due_refreshes_schedule
from secrets_app.oauth2.client import OAuth2Hooks
from secrets_app.services.secrets import secret_create, secret_delete, secret_update
from secrets_app.tasks import oauth2_refresh_connection, oauth2_refresh_due_connections
from tests.servers import RecordingServer, Reply, TricklingServer

pytestmark = pytest.mark.django_db(transaction=True)


def expire(secret, *, in_seconds=-5):
    OAuth2Connection.objects.filter(secret=secret).update(expires_at=timezone.now() + timedelta(seconds=in_seconds))


def stored(secret) -> OAuth2Connection:
    return OAuth2Connection.objects.get(secret=secret)


def call_api(secret_name, server):
    return outbound.request("GET", f"{server.url}/api", auth=api.auth_for(secret_name))


def bearer(request):
    return request.headers.get("Authorization", "").removeprefix("Bearer ")


def stop_clock(monkeypatch, at: datetime) -> None:
    """Django's clock stands still at ``at`` (the vault's and the provider's, one process)."""
    monkeypatch.setattr(timezone, "now", lambda: at)


def revoke_grants_at_the_provider():
    """What the provider does when the user removes the application: every refresh token
    (and its access token) revoked, by django-oauth-toolkit itself."""
    for refresh_token in RefreshToken.objects.filter(revoked__isnull=True):
        refresh_token.revoke()


class TestRefreshOnUse:
    def test_a_valid_token_is_used_as_it_is(self, connected, provider, local_server):
        secret = connected()
        token = stored(secret).tokens["access_token"]
        call_api("crm", local_server)
        assert bearer(local_server.last) == token
        assert provider.log.grants("refresh_token") == []

    @pytest.mark.parametrize("client_auth", ["basic", "post", "none"])
    def test_an_expired_token_is_refreshed_first_and_the_rotated_refresh_token_stored(
        self, client_auth, connected, provider, local_server
    ):
        secret = connected(client_auth=client_auth)
        before = stored(secret)
        expire(secret)
        call_api("crm", local_server)
        after = stored(secret)
        (refresh,) = provider.log.grants("refresh_token")
        assert refresh.basic_auth is (client_auth == "basic")
        assert ("client_secret" in refresh.fields) is (client_auth == "post")
        assert bearer(local_server.last) == after.tokens["access_token"] != before.tokens["access_token"]
        assert after.tokens["refresh_token"] != before.tokens["refresh_token"]  # rotated, and saved
        assert after.version == before.version + 1 and after.expires_at > timezone.now()
        # the provider agrees: the old refresh token is spent, the new one is live
        assert RefreshToken.objects.get(
            token_checksum=RefreshToken.objects.filter(revoked__isnull=True).get().token_checksum
        )

    def test_a_token_expiring_within_the_leeway_is_refreshed(self, connected, provider, local_server, settings):
        settings.FLOWGATE_OAUTH2_REFRESH_LEEWAY_SECONDS = 60
        secret = connected()
        expire(secret, in_seconds=30)
        call_api("crm", local_server)
        assert len(provider.log.grants("refresh_token")) == 1

    def test_a_401_causes_one_forced_refresh_and_one_retry(self, connected, provider):
        secret = connected()
        first_token = stored(secret).tokens["access_token"]
        api_server = RecordingServer(
            lambda request: Reply(status=401 if bearer(request) == first_token else 200, body={})
        )
        try:
            response = call_api("crm", api_server)
            assert response.status_code == 200
            assert [bearer(request) for request in api_server.requests] == [
                first_token,
                stored(secret).tokens["access_token"],
            ]
            assert len(provider.log.grants("refresh_token")) == 1
            assert len(response.history) == 1 and response.history[0].status_code == 401
        finally:
            api_server.stop()

    def test_a_second_401_is_returned_not_retried_again(self, connected, provider):
        connected()
        api_server = RecordingServer(lambda request: Reply(status=401))
        try:
            assert call_api("crm", api_server).status_code == 401
            assert len(api_server.requests) == 2
            assert len(provider.log.grants("refresh_token")) == 1
        finally:
            api_server.stop()


@pytest.fixture
def thirty_second_tokens(settings):
    """The provider issues access tokens that live 30 seconds, half the default 60 s leeway."""
    # The provider's views keep their oauthlib server (and its token lifetime) unless told to reload.
    settings.OAUTH2_PROVIDER = {
        **settings.OAUTH2_PROVIDER,
        "ACCESS_TOKEN_EXPIRE_SECONDS": 30,
        "ALWAYS_RELOAD_OAUTHLIB_CORE": True,
    }
    settings.FLOWGATE_OAUTH2_REFRESH_LEEWAY_SECONDS = 60


class TestShortLivedTokens:
    """The leeway is at most a third of the lifetime the provider gave at issue."""

    def test_a_token_just_issued_is_used_however_often_without_a_refresh(
        self, thirty_second_tokens, connected, provider, local_server, monkeypatch
    ):
        secret = connected()
        issued = stored(secret)
        assert issued.expires_in == 30
        stop_clock(monkeypatch, issued.last_refreshed_at + timedelta(seconds=1))
        for _ in range(10):
            call_api("crm", local_server)
        assert provider.log.grants("refresh_token") == []
        assert {bearer(request) for request in local_server.requests} == {issued.tokens["access_token"]}

    def test_it_is_refreshed_once_when_a_third_of_its_lifetime_is_left(
        self, thirty_second_tokens, connected, provider, local_server, monkeypatch
    ):
        secret = connected()
        issued = stored(secret)
        stop_clock(monkeypatch, issued.expires_at - timedelta(seconds=9))
        for _ in range(5):
            call_api("crm", local_server)
        assert len(provider.log.grants("refresh_token")) == 1
        assert bearer(local_server.last) == stored(secret).tokens["access_token"] != issued.tokens["access_token"]

    def test_a_401_still_refreshes_a_token_just_issued_exactly_once(
        self, thirty_second_tokens, connected, provider, monkeypatch
    ):
        secret = connected()
        issued = stored(secret)
        stop_clock(monkeypatch, issued.last_refreshed_at + timedelta(seconds=1))
        api_server = RecordingServer(
            lambda request: Reply(status=401 if bearer(request) == issued.tokens["access_token"] else 200, body={})
        )
        try:
            assert call_api("crm", api_server).status_code == 200
            assert call_api("crm", api_server).status_code == 200
        finally:
            api_server.stop()
        assert len(provider.log.grants("refresh_token")) == 1
        assert [bearer(request) for request in api_server.requests] == [
            issued.tokens["access_token"],
            *[stored(secret).tokens["access_token"]] * 2,
        ]

    def test_the_proactive_refresh_keeps_to_the_same_share_of_the_lifetime(self, thirty_second_tokens, connected):
        issued = stored(connected())
        assert issued.expires_at - timedelta(seconds=10) <= issued.next_refresh_at
        assert issued.next_refresh_at <= issued.expires_at - timedelta(seconds=5)

    def test_a_token_stored_before_lifetimes_were_kept_uses_the_configured_leeway(
        self, connected, provider, local_server, settings
    ):
        settings.FLOWGATE_OAUTH2_REFRESH_LEEWAY_SECONDS = 60
        secret = connected()
        OAuth2Connection.objects.filter(secret=secret).update(expires_in=None)
        expire(secret, in_seconds=50)
        call_api("crm", local_server)
        assert len(provider.log.grants("refresh_token")) == 1


class TestFailures:
    def test_invalid_grant_needs_reauthorization_and_says_so(self, connected, provider, local_server):
        secret = connected()
        received = []
        signals.oauth2_connection_needs_reauthorization.connect(
            lambda **kwargs: received.append(kwargs), weak=False, dispatch_uid="t1"
        )
        try:
            RefreshToken.objects.update(revoked=timezone.now())  # the user removed the app at the provider
            expire(secret)
            with pytest.raises(ReauthorizationRequired):
                call_api("crm", local_server)
        finally:
            signals.oauth2_connection_needs_reauthorization.disconnect(dispatch_uid="t1")
        connection = stored(secret)
        assert connection.status == "needs_reauthorization"
        assert "invalid_grant" in connection.last_error
        assert received and received[0]["secret"].name == "crm"
        assert AuditEvent.objects.filter(action="oauth2.needs_reauthorization", target_name="crm").exists()
        with pytest.raises(ReauthorizationRequired, match="needs re-authorization"):
            call_api("crm", local_server)
        assert len(provider.log.grants("refresh_token")) == 1  # no retries after the grant died

    def test_the_first_failure_after_the_grant_was_revoked_names_the_secret(self, connected, provider, local_server):
        secret = connected()
        revoke_grants_at_the_provider()
        expire(secret)
        with pytest.raises(ReauthorizationRequired) as first:
            call_api("crm", local_server)
        assert str(first.value).startswith("OAuth2 secret 'crm' needs re-authorization: ")
        assert "invalid_grant" in str(first.value)
        assert stored(secret).last_error == str(first.value)
        with pytest.raises(ReauthorizationRequired) as again:
            call_api("crm", local_server)
        assert str(again.value) == str(first.value)  # the same words every time

    def test_a_transient_failure_names_the_secret_too(self, db):
        server = RecordingServer(lambda request: Reply(status=503))
        try:
            secret = token_endpoint_secret(server)
            with pytest.raises(TokenEndpointUnavailable) as failure:
                call_api("flaky", server)
        finally:
            server.stop()
        assert str(failure.value) == "OAuth2 secret 'flaky': The token endpoint answered HTTP 503."
        assert stored(secret).last_error == str(failure.value)

    def test_fixing_the_client_secret_after_invalid_client_lets_the_stored_refresh_token_work_again(
        self, connected, provider, local_server
    ):
        secret = connected()
        right_secret = secret.values["client_secret"]
        secret_update(secret=secret, data={**secret.config, "client_secret": "wrong-client-secret-1"})
        expire(secret)
        with pytest.raises(ReauthorizationRequired, match="invalid_client"):
            call_api("crm", local_server)
        assert stored(secret).status == "needs_reauthorization" and stored(secret).has_refresh_token

        secret_update(secret=Secret.objects.get(pk=secret.pk), data={**secret.config, "client_secret": right_secret})
        reset = stored(secret)
        assert reset.status == "connected" and "not verified yet" in reset.last_error
        assert AuditEvent.objects.filter(action="oauth2.client_changed", target_name="crm").exists()
        call_api("crm", local_server)
        assert bearer(local_server.last) == stored(secret).tokens["access_token"]
        assert len(provider.log.grants("refresh_token")) == 2  # the refused one, then the one that worked
        assert stored(secret).last_error == "" and AuditEvent.objects.filter(action="oauth2.recovered").exists()

    def test_changing_other_settings_leaves_a_refused_connection_as_it_is(self, connected, local_server):
        secret = connected()
        OAuth2Connection.objects.filter(secret=secret).update(status="needs_reauthorization", last_error="x")
        secret_update(secret=secret, data={**secret.config, "test_url": f"{local_server.url}/me"})
        assert stored(secret).status == "needs_reauthorization"

    def test_reconnecting_recovers_and_says_so(self, connected, browser, provider):
        secret = connected()
        OAuth2Connection.objects.filter(secret=secret).update(
            status="needs_reauthorization", last_error="invalid_grant"
        )
        received = []
        signals.oauth2_connection_recovered.connect(
            lambda **kwargs: received.append(kwargs), weak=False, dispatch_uid="t2"
        )
        try:
            assert browser.connect("crm").status_code == 302
        finally:
            signals.oauth2_connection_recovered.disconnect(dispatch_uid="t2")
        assert stored(secret).status == "connected" and stored(secret).last_error == ""
        assert received and AuditEvent.objects.filter(action="oauth2.recovered").exists()

    def test_two_reconnects_that_read_the_broken_connection_recover_it_once(self, db):
        from secrets_app.oauth2.client import TokenResult
        from secrets_app.oauth2.tokens import connection_for, store_tokens

        server = RecordingServer()
        try:
            secret = token_endpoint_secret(server)
        finally:
            server.stop()
        OAuth2Connection.objects.filter(secret=secret).update(status="needs_reauthorization", last_error="invalid_grant")
        first, second = connection_for(secret), connection_for(secret)  # both callbacks read it broken
        received = []
        signals.oauth2_connection_recovered.connect(lambda **kwargs: received.append(kwargs), weak=False, dispatch_uid="t3")
        try:
            store_tokens(first, TokenResult(token="access-a", refresh_token="refresh-a"), connected=True)
            store_tokens(second, TokenResult(token="access-b", refresh_token="refresh-b"), connected=True)
        finally:
            signals.oauth2_connection_recovered.disconnect(dispatch_uid="t3")
        assert len(received) == 1 and AuditEvent.objects.filter(action="oauth2.recovered").count() == 1
        assert stored(secret).tokens["access_token"] == "access-b"  # a new grant always wins


def token_endpoint_secret(server, name="flaky", **fields):
    """An OAuth2 secret connected by hand, whose token endpoint is a local server."""
    secret = secret_create(
        name=name,
        kind="oauth2",
        data={
            "client_id": "client",
            "client_secret": "client-secret-1",
            "authorize_url": f"{server.url}/authorize",
            "token_url": f"{server.url}/token",
            **fields,
        },
    )
    OAuth2Connection.objects.filter(secret=secret).update(
        status="connected",
        tokens={"access_token": "old-access-1", "refresh_token": "old-refresh-1"},
        expires_at=timezone.now() - timedelta(seconds=5),
    )
    return secret


class TestProviderAnswers:
    def test_a_refresh_without_a_new_refresh_token_keeps_the_old_one(self, db):
        server = RecordingServer(
            lambda request: Reply(body={"access_token": "new-access-2", "token_type": "Bearer", "expires_in": 3600})
        )
        try:
            secret = token_endpoint_secret(server)
            from secrets_app.oauth2.tokens import access_token_get

            assert access_token_get(secret) == "new-access-2"
            assert stored(secret).tokens == {"access_token": "new-access-2", "refresh_token": "old-refresh-1"}
        finally:
            server.stop()

    def test_a_token_answer_trickled_byte_by_byte_is_cut_at_the_deadline(self, db, settings):
        from secrets_app.oauth2.client import OAuth2Config, OAuth2Hooks

        settings.FLOWGATE_OUTBOUND_TIMEOUT_SECONDS = 1
        server = TricklingServer()
        secret = token_endpoint_secret(server)
        with pytest.raises(TokenEndpointUnavailable, match="OutboundTimeout"):
            OAuth2Hooks().refresh(OAuth2Config.from_secret(secret), refresh_token="old-refresh-1")
        assert server.finished.wait(60)
        assert server.sent < 100

    def test_transient_failures_are_retried_with_backoff(self, db):
        answers = [Reply(status=503), Reply(status=502), Reply(body={"access_token": "new-access-2", "expires_in": 60})]
        server = RecordingServer(lambda request: answers.pop(0))
        try:
            secret = token_endpoint_secret(server)
            from secrets_app.oauth2.tokens import access_token_get

            assert access_token_get(secret) == "new-access-2"
            assert len(server.requests) == 3
        finally:
            server.stop()

    def test_the_proactive_refresh_calls_a_down_provider_once_per_task_attempt(self, db):
        """One retry layer: the task's own retries, not in-process retries inside each of them."""
        from secrets_app.services.oauth2 import oauth2_connection_refresh_due

        server = RecordingServer(lambda request: Reply(status=503))
        try:
            connection = stored(token_endpoint_secret(server))
            with pytest.raises(TokenEndpointUnavailable, match="HTTP 503"):
                oauth2_connection_refresh_due(connection_id=connection.pk, version=connection.version)
            assert len(server.requests) == 1
        finally:
            server.stop()

    def test_a_provider_that_stays_down_keeps_the_token_and_records_the_error(self, db):
        server = RecordingServer(lambda request: Reply(status=503))
        try:
            secret = token_endpoint_secret(server)
            from secrets_app.oauth2.tokens import access_token_get

            with pytest.raises(TokenEndpointUnavailable, match="HTTP 503"):
                access_token_get(secret)
            connection = stored(secret)
            assert connection.status == "connected"
            assert connection.tokens == {"access_token": "old-access-1", "refresh_token": "old-refresh-1"}
            assert "HTTP 503" in connection.last_error and connection.failure_count == 1
            assert connection.next_refresh_at > timezone.now() + timedelta(seconds=30)
        finally:
            server.stop()

    def test_429_is_retried_after_the_time_it_asks_for(self, db):
        import time

        answers = [
            Reply(status=429, headers={"Retry-After": "1"}),
            Reply(body={"access_token": "new-access-2", "expires_in": 60}),
        ]
        server = RecordingServer(lambda request: answers.pop(0))
        try:
            secret = token_endpoint_secret(server)
            from secrets_app.oauth2.tokens import access_token_get

            started = time.monotonic()
            assert access_token_get(secret) == "new-access-2"
            assert time.monotonic() - started >= 1
        finally:
            server.stop()

    def test_a_recovered_connection_says_so(self, db):
        server = RecordingServer(lambda request: Reply(body={"access_token": "new-access-2", "expires_in": 60}))
        try:
            secret = token_endpoint_secret(server)
            OAuth2Connection.objects.filter(secret=secret).update(failure_count=3, last_error="HTTP 503")
            from secrets_app.oauth2.tokens import access_token_get

            access_token_get(secret)
            assert stored(secret).failure_count == 0 and stored(secret).last_error == ""
            assert AuditEvent.objects.filter(action="oauth2.recovered", target_name="flaky").exists()
        finally:
            server.stop()


class TestRevocation:
    @pytest.mark.parametrize("client_auth", ["basic", "post", "none"])
    def test_revoke_asks_the_provider_refresh_token_first_and_forgets_the_tokens(
        self, client_auth, connected, provider, local_server
    ):
        secret = connected(client_auth=client_auth)
        note = oauth2_connection_revoke(secret=secret)
        assert "revoked at the provider" in note
        revocations = provider.log.revocations()
        assert [entry.token_type_hint for entry in revocations] == ["refresh_token", "access_token"]
        assert all(entry.basic_auth is (client_auth == "basic") for entry in revocations)
        assert all(("client_secret" in entry.fields) is (client_auth == "post") for entry in revocations)
        assert not AccessToken.objects.exists()
        assert stored(secret).status == "revoked" and stored(secret).tokens == {}
        with pytest.raises(NotConnected, match="was revoked"):
            call_api("crm", local_server)

    def test_deleting_a_secret_revokes_first(self, connected, provider):
        secret = connected()
        assert secret_delete(secret=secret) == []
        assert len(provider.log.revocations()) == 2
        assert not AccessToken.objects.exists() and not Secret.objects.filter(name="crm").exists()

    def test_reconnecting_after_revocation(self, connected, browser):
        secret = connected()
        oauth2_connection_revoke(secret=secret)
        assert browser.connect("crm").status_code == 302
        assert stored(secret).status == "connected"


def refresh_at_the_provider(provider, refresh_token: str) -> requests.Response:
    """Spend ``refresh_token`` at the provider's token endpoint, as the client would."""
    return requests.post(
        provider.token_url,
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=("client-crm", "provider-client-secret-crm-0123456789"),
        timeout=30,
    )


class GrantEndingHooks(OAuth2Hooks):
    """A provider where revoking one token ends the account's whole grant (Google)."""

    revocation_ends_the_grant = True


class TestReconnecting:
    def test_reconnecting_revokes_the_replaced_refresh_token_at_the_provider(self, connected, browser, provider):
        secret = connected()
        replaced = stored(secret).tokens["refresh_token"]
        provider.log.clear()
        assert browser.connect("crm").status_code == 302
        current = stored(secret)
        assert current.status == "connected" and current.tokens["refresh_token"] != replaced
        assert [entry.token_type_hint for entry in provider.log.revocations()] == ["refresh_token"]
        refused = refresh_at_the_provider(provider, replaced)
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
        assert AuditEvent.objects.filter(action="oauth2.revoke_replaced", target_name="crm").exists()
        # the new grant was left alone
        provider.log.clear()
        expire(secret)
        userinfo = outbound.request("GET", provider.userinfo_url, auth=api.auth_for("crm"))
        assert userinfo.status_code == 200 and len(provider.log.grants("refresh_token")) == 1

    def test_a_failed_revocation_is_reported_and_keeps_the_new_connection(self, connected, browser, provider):
        down = RecordingServer(lambda request: Reply(status=503))
        try:
            secret = connected(revocation_url=f"{down.url}/revoke")
            replaced = stored(secret).tokens["refresh_token"]
            callback = browser.connect("crm")
            assert callback.status_code == 302
            page = browser.get(callback.headers["Location"]).text
        finally:
            down.stop()
        assert "could not be revoked at the provider" in page and "HTTP 503" in page
        current = stored(secret)
        assert current.status == "connected" and current.tokens["refresh_token"] != replaced
        assert current.last_error == ""
        failed = AuditEvent.objects.get(action="oauth2.revoke_replaced_failed", target_name="crm")
        assert "HTTP 503" in failed.detail["reason"] and replaced not in str(failed.detail)
        assert refresh_at_the_provider(provider, replaced).status_code == 200  # alive, as reported

    def test_where_revoking_ends_the_whole_grant_the_same_accounts_old_token_is_left_alone(
        self, connected, browser, provider, settings
    ):
        settings.FLOWGATE_OAUTH2_HOOK_MODULES = ["tests.secrets_app.oauth2."]
        secret = connected(hooks=f"{__name__}.GrantEndingHooks")
        provider.log.clear()
        assert browser.connect("crm").status_code == 302
        assert provider.log.revocations() == []
        assert stored(secret).status == "connected"


class TestClientCredentials:
    def test_a_token_is_fetched_when_needed_and_again_after_expiry(self, provider, local_server, owner):
        from tests.provider import provider_application

        client_id, client_secret = provider_application(name="m2m", redirect_uri="", grant_type="client-credentials")
        secret = secret_create(
            name="m2m",
            kind="oauth2",
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": client_secret,
                "token_url": provider.token_url,
                "scope": "read",
            },
        )
        call_api("m2m", local_server)
        call_api("m2m", local_server)
        assert len(provider.log.grants("client_credentials")) == 1
        expire(secret)
        call_api("m2m", local_server)
        assert len(provider.log.grants("client_credentials")) == 2
        assert bearer(local_server.last) == stored(secret).tokens["access_token"]


@contextmanager
def published_refreshes():
    """The refresh tasks the code under test sends to the broker: (connection id, eta).

    Counted as they leave for the real broker (Celery's ``before_task_publish``), into a
    queue of their own that no worker serves (the session's worker would run them, and
    their failures would make the connections due again), deleted afterwards.
    """
    published = []
    queue = f"published-refreshes-{time.monotonic_ns()}"

    def record(sender=None, body=None, headers=None, **kwargs):
        if sender == "secrets_app.tasks.oauth2_refresh_connection":
            published.append((body[0][0], datetime.fromisoformat(headers["eta"])))

    before_task_publish.connect(record, weak=False, dispatch_uid="published_refreshes")
    default_queue = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = queue
    try:
        yield published
    finally:
        celery_app.conf.task_default_queue = default_queue
        before_task_publish.disconnect(dispatch_uid="published_refreshes")
        with celery_app.connection_for_write() as connection:
            connection.default_channel.queue_delete(queue)


def oauth2_connections(prefix, count, *, refresh_at):
    """``count`` connected OAuth2 secrets, the i-th due at ``refresh_at(i)``; returns {id: due time}."""
    secrets = Secret.objects.bulk_create(
        Secret(name=f"{prefix}-{number}", kind="oauth2", config={"token_url": "https://idp.example/token"})
        for number in range(count)
    )
    connections = OAuth2Connection.objects.bulk_create(
        OAuth2Connection(
            secret=secret,
            status="connected",
            tokens={"access_token": "a", "refresh_token": "r"},
            next_refresh_at=refresh_at(number),
        )
        for number, secret in enumerate(secrets)
    )
    return {connection.pk: connection.next_refresh_at for connection in connections}


class TestProactiveRefresh:
    def test_every_connection_due_before_the_next_run_is_queued_once_at_its_own_moment(self, monkeypatch):
        """Ten thousand connections issued together: one beat run queues all those due
        before the next run (the old cap was 500), each for its own refresh time.

        The run happens at one moment: Django's clock (the schedule's) and Celery's (which
        turns each countdown into an ETA) stand still, so how long the rows take to create
        or the messages to publish changes nothing."""
        now = timezone.now()
        monkeypatch.setattr(timezone, "now", lambda: now)
        monkeypatch.setattr(celery_app, "now", lambda: now)
        on_time = oauth2_connections("on-time", 9_000, refresh_at=lambda number: now + timedelta(seconds=1 + number % 59))
        late = oauth2_connections("late", 1_000, refresh_at=lambda number: now - timedelta(minutes=1))
        later = oauth2_connections("later", 500, refresh_at=lambda number: now + timedelta(minutes=5))
        with published_refreshes() as published:
            oauth2_refresh_due_connections()  # the beat task, as beat's worker runs it
            etas = dict(published)
            assert len(published) == len(etas) == 10_000 and set(etas) == set(on_time) | set(late)
            assert all(etas[pk] == due for pk, due in on_time.items())
            late_offsets = sorted((etas[pk] - now).total_seconds() for pk in late)
            assert 0 <= late_offsets[0] and late_offsets[-1] <= 60  # spread over one interval...
            assert late_offsets[100] < 10 and late_offsets[-100] > 50  # ...not sent at once
            oauth2_refresh_due_connections()
            assert len(published) == 10_000  # handed out once
        assert not set(etas) & set(later)

    def test_the_interval_is_read_from_the_beat_entry(self):
        from django_celery_beat.models import IntervalSchedule, PeriodicTask

        every_five_minutes, _ = IntervalSchedule.objects.get_or_create(every=300, period=IntervalSchedule.SECONDS)
        PeriodicTask.objects.filter(name="Refresh expiring OAuth2 tokens").update(interval=every_five_minutes)
        start = timezone.now()
        (pk,) = oauth2_connections("due", 1, refresh_at=lambda number: start + timedelta(seconds=200))
        with published_refreshes() as published:
            oauth2_refresh_due_connections()
        assert [connection_id for connection_id, _ in published] == [pk]

    def test_due_connections_are_refreshed_once(self, connected, provider):
        secret = connected()
        OAuth2Connection.objects.filter(secret=secret).update(next_refresh_at=timezone.now() - timedelta(seconds=1))
        queued = []
        assert oauth2_due_refreshes_schedule(enqueue=lambda *args: queued.append(args)) == 1
        assert oauth2_due_refreshes_schedule(enqueue=lambda *args: queued.append(args)) == 0  # claimed
        (connection_id, version, countdown) = queued[0]
        assert 0 <= countdown <= 60
        assert oauth2_refresh_connection(connection_id, version) == "refreshed"
        assert oauth2_refresh_connection(connection_id, version) == "skipped"  # idempotent
        assert len(provider.log.grants("refresh_token")) == 1

    def test_refresh_times_are_spread_inside_the_window(self, db):
        from secrets_app.oauth2.tokens import next_refresh_at

        expires = timezone.now() + timedelta(hours=1)
        times = [next_refresh_at(pk, expires, 3600) for pk in range(1, 1001)]
        leads = sorted((expires - moment).total_seconds() for moment in times)
        assert 449 <= leads[0] and leads[-1] <= 900  # between half the window and the window
        assert len({round(lead) for lead in leads}) > 300  # not all at once


def test_no_token_or_client_secret_reaches_a_log_line(connected, provider, local_server, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    secret = connected()
    before = stored(secret).tokens
    expire(secret)
    call_api("crm", local_server)
    oauth2_connection_revoke(secret=secret)
    assert provider.log.grants("refresh_token") and provider.log.revocations()
    ours = [record for record in caplog.records if not record.name.startswith("oauth2_provider")]
    logged = "\n".join(record.getMessage() for record in ours)
    for value in (*before.values(), "provider-client-secret-crm-0123456789", bearer(local_server.last)):
        assert value not in logged


def test_the_proactive_refresh_job_is_a_beat_entry_editable_in_the_admin(db):
    from django_celery_beat.models import PeriodicTask

    entry = PeriodicTask.objects.get(name="Refresh expiring OAuth2 tokens")
    assert entry.task == "secrets_app.tasks.oauth2_refresh_due_connections" and entry.enabled
    assert entry.interval.every == 60
