"""The admin action that makes connect links (the apps admin lists it on apps and connections)."""

from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib import admin
from django.contrib.messages import get_messages
from django.contrib.messages.storage.fallback import FallbackStorage

from apps_app.admin_connect_links import make_connect_links
from apps_app.manifest import manifest_parse
from apps_app.models import App, Connection, ConnectLink
from apps_app.services.apps import app_install
from apps_app.services.connect_links import connect_link_create
from apps_app.services.connections import connection_create
from project.log_redaction import redact_text
from secrets_app.models import AuditEvent
from tests.apps_app.conftest import notes_manifest

pytestmark = pytest.mark.django_db


@pytest.fixture
def notes_app():
    return app_install(manifest=manifest_parse(notes_manifest("http://127.0.0.1:9"))).app


def run_action(rf, user, model, queryset) -> list[str]:
    request = rf.post("/admin/")
    request.user, request.session = user, {}
    request._messages = FallbackStorage(request)
    make_connect_links(admin.ModelAdmin(model, admin.site), request, queryset)
    return [str(message) for message in get_messages(request)]


def test_an_app_gets_a_link_shown_once_with_a_copy_button(rf, notes_app, staff_user):
    editor = staff_user("editor")
    [message] = run_action(rf, editor, App, App.objects.all())
    link = ConnectLink.objects.get()
    assert (link.app, link.created_by, link.reconnect) == (notes_app, editor, False)
    assert 'value="http://testserver/connect/' in message and ">Copy</button>" in message
    audit = AuditEvent.objects.get(action="app.connect_link")
    assert "/connect/" not in str(audit.detail)  # the URL is a bearer credential


def test_a_links_token_is_masked_in_request_log_lines(notes_app):
    url = connect_link_create(app=notes_app).url
    token = parse_qs(urlsplit(url).query)["link"][0]
    line = redact_text(f'"GET {urlsplit(url).path}?{urlsplit(url).query} HTTP/1.1" 200 2154')
    assert token not in line and "/connect/?link=" in line


def test_a_connection_gets_a_reconnect_link_only_for_who_may_manage_it(rf, notes_app, staff_user):
    ann, bob = staff_user("ann"), staff_user("bob")
    connection = connection_create(app=notes_app, data={"api_key": "key-ann"}, acting_user=ann)
    [refused] = run_action(rf, bob, Connection, Connection.objects.all())
    assert "may not manage" in refused and not ConnectLink.objects.exists()
    run_action(rf, ann, Connection, Connection.objects.all())
    assert ConnectLink.objects.get().connection == connection


def test_without_the_permission_to_add_secrets_no_link_is_made(rf, notes_app, django_user_model):
    viewer = django_user_model.objects.create_user("viewer", is_staff=True)
    [refused] = run_action(rf, viewer, App, App.objects.all())
    assert "permission to add secrets" in refused and not ConnectLink.objects.exists()
