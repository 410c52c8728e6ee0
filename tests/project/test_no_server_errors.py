"""No 500 anywhere a user can get to: every admin page and action, with bad input.

The pages are enumerated from ``admin.site._registry`` and each ModelAdmin's
``get_urls()``, so a page added later is walked without changing this file. Each is
requested (GET and a garbage POST) with real ids, ids of the wrong kind and ids that do
not exist, as a superuser and as a staff user with few rights; every action of every
ModelAdmin is posted with the same ids. The vault holds an OAuth2 secret whose endpoints
the outbound guard refuses, so refreshing, testing, revoking and deleting it fail; so do
the connections of the two apps installed.
"""

import re
from collections import Counter
from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.auth.models import Permission
from django.test import Client, RequestFactory
from django.utils import timezone
from oauth2_provider.models import get_application_model

from apps_app.manifest import manifest_parse
from apps_app.services.apps import app_install, app_registration_set
from apps_app.services.connections import connection_create
from flows_app.models import FlowRun
from secrets_app.models import OAuth2Connection
from secrets_app.services.secrets import secret_create
from tests.apps_app.test_admin import oauth2_manifest
from tests.apps_app.conftest import notes_manifest
from tests.flows_app.conftest import make_flow
from tests.provider import provider_application

MISSING_ID = "999999"
OPERATIONS = ["refresh", "test", "revoke", "no-such-operation"]
#: What a confused or hostile browser may send to any admin page.
GARBAGE_POST = {
    "name": "x" * 300,
    "slug": "not a slug",
    "kind": "no-such-kind",
    "input": "{not json",
    "action": "no-such-action",
    "grant": "not-a-number",
    "user": MISSING_ID,
    "group": "not-a-number",
    "level": "owner",
    "confirm": "yes",
    "post": "yes",
    "force": "yes",
    "token_url": "http://127.0.0.1:9/token",
    "description": "nul \x00 byte",
}
#: The same, as each form of a page with several forms (the grants page's give and withdraw).
GARBAGE_POSTS = [GARBAGE_POST, {**GARBAGE_POST, "action": "give"}, {**GARBAGE_POST, "action": "withdraw"}]
MALFORMED_SELECTION = {helpers.ACTION_CHECKBOX_NAME: ["not-a-number", MISSING_ID]}
PARAMETER = re.compile(r"<(?:\w+:)?(\w+)>")


@pytest.fixture
def vault(db, settings, admin_user):
    """One object of each kind users meet, and an OAuth2 connection the guard cuts off."""
    settings.FLOWGATE_ALLOW_NETWORKS = []  # loopback closed: the endpoints below are refused
    settings.FLOWGATE_GENERATED_RSA_BITS = 2048
    secret_create(name="token", kind="api_token", data={"token": "tok-0123456789", "probe_url": "http://127.0.0.1:9/"})
    secret_create(name="signer", kind="rs256", data={"generate": True}, acting_user=admin_user)
    refused = secret_create(
        name="refused",
        kind="oauth2",
        acting_user=admin_user,
        data={
            "client_id": "client",
            "client_secret": "client-secret-0123456789",
            "authorize_url": "http://127.0.0.1:9/authorize",
            "token_url": "http://127.0.0.1:9/token",
            "revocation_url": "http://127.0.0.1:9/revoke",
            "test_url": "http://127.0.0.1:9/me",
        },
    )
    OAuth2Connection.objects.update_or_create(
        secret=refused,
        defaults=dict(status=OAuth2Connection.Status.CONNECTED,
        tokens={"access_token": "access-0123456789", "refresh_token": "refresh-0123456789"},
        expires_at=timezone.now() - timedelta(minutes=1)),
    )
    flow = make_flow("hello", [{"key": "hi", "kind": "transform", "value": "hello"}])
    FlowRun.objects.create(flow=flow, status=FlowRun.Status.FAILED, error="boom")
    FlowRun.objects.create(flow=flow, status=FlowRun.Status.SUCCEEDED)
    provider_application(name="caller", redirect_uri="https://caller.example.com/back")
    # Apps: one with fields, one with OAuth2, each with a connection whose test is refused.
    settings.BASE_URL = "https://flowgate.example"
    notes = app_install(manifest=manifest_parse(notes_manifest("http://127.0.0.1:9")), acting_user=admin_user).app
    connection_create(app=notes, data={"api_key": "key-0123456789"}, acting_user=admin_user)
    cloud = app_install(manifest=manifest_parse(oauth2_manifest("http://127.0.0.1:9"))).app
    app_registration_set(app=cloud, client_id="cloud-client", client_secret="cloud-secret-0123456789")
    connection_create(app=cloud, acting_user=admin_user)


@pytest.fixture
def limited_staff(db, django_user_model):
    """Sees every page, may change secrets and run flows, but holds no grant on any secret."""
    user = django_user_model.objects.create_user(username="limited", password="limited-password-1", is_staff=True)
    codenames = ["change_secret", "delete_secret", "change_flow", "run_flow"]
    user.user_permissions.set(
        Permission.objects.filter(codename__startswith="view_") | Permission.objects.filter(codename__in=codenames)
    )
    return user


def ids_for(model, walker) -> list[str]:
    """Up to four real ids and one that does not exist; never the walking user (a deleted
    walker would be sent to the login page for the rest of the walk)."""
    objects = model._default_manager.order_by("pk")
    if model is type(walker):
        objects = objects.exclude(pk=walker.pk)
    return [str(pk) for pk in objects.values_list("pk", flat=True)[:4]] + [MISSING_ID]


def admin_urls(walker) -> list[str]:
    """Every URL of every registered ModelAdmin, each parameter filled with each value it may take."""
    urls = []
    for model, model_admin in admin.site._registry.items():
        prefix = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        for pattern in model_admin.get_urls():
            route = str(pattern.pattern)
            filled = [route]
            for parameter in PARAMETER.findall(route):
                values = OPERATIONS if parameter == "operation" else ids_for(model, walker) + ["not-a-number"]
                filled = [
                    re.sub(rf"<(?:\w+:)?{parameter}>", value, url, count=1) for url in filled for value in values
                ]
            urls += [prefix + url for url in filled]
    # The custom pages of one kind, asked for with a secret of every other kind too.
    return urls + [f"{url}?kind=no-such-kind" for url in urls if url.endswith("/add/")]


def action_posts(walker, superuser) -> list[tuple[str, dict]]:
    """Every action of every ModelAdmin (all a superuser is offered), with each selection."""
    request = RequestFactory().get("/admin/")
    request.user = superuser
    posts = []
    for model, model_admin in admin.site._registry.items():
        changelist = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        for action in model_admin.get_actions(request):
            for confirmed in ({}, {"post": "yes"}, {"post": "yes", "force": "yes"}):
                posts.append(
                    (changelist, {"action": action, "index": "0", helpers.ACTION_CHECKBOX_NAME: ids_for(model, walker), **confirmed})
                )
                posts.append(
                    (changelist, {**GARBAGE_POST, **MALFORMED_SELECTION, "action": action, "index": "0", **confirmed})
                )
    return posts


def server_errors(user, requests) -> list[str]:
    browser = Client(raise_request_exception=False)
    browser.force_login(user)
    found, statuses = [], Counter()
    for method, url, data in requests:
        response = browser.post(url, data) if method == "POST" else browser.get(url)
        statuses[response.status_code] += 1
        if response.status_code >= 500:
            found.append(f"{user.username} {method} {url} {data.get('action', '') if data else ''} -> {response.status_code}")
    return found, statuses


@pytest.mark.parametrize("who", ["superuser", "limited staff"])
def test_no_admin_page_or_action_answers_a_server_error(who, vault, admin_user, limited_staff):
    user = admin_user if who == "superuser" else limited_staff
    urls = admin_urls(user)
    requests = [("GET", url, None) for url in urls] + [("POST", url, data) for url in urls for data in GARBAGE_POSTS]
    requests += [("POST", url, data) for url, data in action_posts(user, admin_user)]
    assert len(urls) > 100 and get_application_model().objects.exists()
    errors, statuses = server_errors(user, requests)
    assert errors == [], "\n".join(errors)
    assert statuses[200] > 50 and statuses[302] > 50  # the walk reached pages and ran actions
