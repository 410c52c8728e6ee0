"""Owners and grants: who may use and who may manage each secret."""

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from secrets_app import access
from secrets_app.models import AuditEvent, SecretGrant
from secrets_app.services.grants import grant_give, grant_withdraw, secret_owner_set
from secrets_app.services.secrets import secret_create, secret_delete, secret_probe, secret_update


@pytest.fixture
def people(staff_user):
    return staff_user("alice"), staff_user("bob"), staff_user("mallory")


@pytest.fixture
def alices_token(people):
    alice = people[0]
    return secret_create(name="tok-main", kind="api_token", data={"token": "tok-alice-4417"}, acting_user=alice)


class TestRules:
    def test_the_creator_owns_a_secret_and_may_use_and_manage_it(self, people, alices_token):
        alice, bob, _ = people
        assert alices_token.owner == alice
        assert access.may_use(alice, alices_token) and access.may_manage(alice, alices_token)
        assert not access.may_use(bob, alices_token) and not access.may_manage(bob, alices_token)

    def test_a_use_grant_lets_a_user_use_but_not_manage(self, people, alices_token):
        alice, bob, _ = people
        grant_give(secret=alices_token, user=bob, level=SecretGrant.Level.USE, acting_user=alice)
        assert access.may_use(bob, alices_token)
        assert not access.may_manage(bob, alices_token)

    def test_a_group_grant_reaches_every_member_and_no_one_else(self, people, alices_token):
        alice, bob, mallory = people
        team = Group.objects.create(name="integrations")
        bob.groups.add(team)
        grant_give(secret=alices_token, group=team, level=SecretGrant.Level.MANAGE, acting_user=alice)
        assert access.may_manage(bob, alices_token)
        assert not access.may_use(mallory, alices_token)

    def test_superusers_and_the_operator_may_use_everything_an_inactive_owner_nothing(
        self, people, alices_token, admin_user
    ):
        alice = people[0]
        assert access.may_manage(admin_user, alices_token) and access.may_manage(None, alices_token)
        alice.is_active = False
        alice.save()
        assert not access.may_use(alice, alices_token)

    def test_only_a_manager_may_give_grants(self, people, alices_token):
        _, bob, mallory = people
        with pytest.raises(PermissionDenied):
            grant_give(secret=alices_token, user=mallory, level=SecretGrant.Level.USE, acting_user=mallory)
        assert not SecretGrant.objects.exists()

    def test_grants_given_and_withdrawn_are_audited_without_values(self, people, alices_token):
        alice, bob, _ = people
        grant = grant_give(secret=alices_token, user=bob, level=SecretGrant.Level.USE, acting_user=alice)
        grant_withdraw(grant=grant, acting_user=alice)
        events = list(AuditEvent.objects.filter(action__startswith="grant.").order_by("id").values("action", "actor_label", "detail"))
        assert events == [
            {"action": "grant.give", "actor_label": "alice", "detail": {"to": "user bob", "level": "use"}},
            {"action": "grant.withdraw", "actor_label": "alice", "detail": {"from": "user bob", "level": "use", "stops": []}},
        ]
        assert not access.may_use(bob, alices_token)

    def test_only_a_superuser_hands_a_secret_to_another_owner(self, people, alices_token, admin_user):
        alice, bob, _ = people
        with pytest.raises(PermissionDenied):
            secret_owner_set(secret=alices_token, owner=bob, acting_user=alice)
        secret_owner_set(secret=alices_token, owner=bob, acting_user=admin_user)
        assert access.may_manage(bob, alices_token) and not access.may_manage(alice, alices_token)


class TestServicesAskForManage:
    def test_a_user_without_a_manage_grant_cannot_change_test_or_delete(self, people, alices_token):
        alice, bob, _ = people
        grant_give(secret=alices_token, user=bob, level=SecretGrant.Level.USE, acting_user=alice)
        for attempt in (
            lambda: secret_update(secret=alices_token, data={"token": "tok-bob-0000"}, acting_user=bob),
            lambda: secret_probe(secret=alices_token, acting_user=bob),
            lambda: secret_delete(secret=alices_token, acting_user=bob),
        ):
            with pytest.raises(PermissionDenied, match="bob may not manage the secret 'tok-main'"):
                attempt()
        alices_token.refresh_from_db()
        assert alices_token.values["token"] == "tok-alice-4417"


class TestAdmin:
    def test_a_vault_editor_without_a_grant_gets_a_read_only_page_and_no_actions(self, client, people, alices_token):
        client.force_login(people[2])
        change = reverse("admin:secrets_app_secret_change", args=[alices_token.pk])
        page = client.get(change)
        assert page.status_code == 200 and "tok-alice-4417" not in page.content.decode()
        assert client.post(change, {"name": "stolen", "description": "", "token": "x"}).status_code == 403
        assert client.post(reverse("admin:secrets_app_secret_test", args=[alices_token.pk])).status_code == 403
        assert client.post(reverse("admin:secrets_app_secret_delete", args=[alices_token.pk]), {"post": "yes"}).status_code == 403
        alices_token.refresh_from_db()
        assert alices_token.name == "tok-main"

    def test_bulk_actions_skip_secrets_the_user_may_not_manage(self, client, people, alices_token):
        client.force_login(people[2])
        response = client.post(
            reverse("admin:secrets_app_secret_changelist"),
            {"action": "delete_selected_secrets", "_selected_action": [alices_token.pk], "post": "yes"},
            follow=True,
        )
        assert "Skipped, you may not manage: tok-main." in response.content.decode()
        assert alices_token.__class__.objects.filter(pk=alices_token.pk).exists()

    def test_the_grants_page_gives_a_grant_and_confirms_a_withdrawal_naming_the_flows_that_stop(
        self, client, people, alices_token
    ):
        from tests.flows_app.conftest import make_flow

        alice, bob, _ = people
        client.force_login(alice)
        grants = reverse("admin:secrets_app_secret_grants", args=[alices_token.pk])
        response = client.post(grants, {"action": "give", "user": bob.pk, "level": "use"}, follow=True)
        assert "User bob may now use in flows." in response.content.decode()
        make_flow("bobs-sync", [{"key": "me", "kind": "http_request", "url": "https://api.example.com/me", "secret": "tok-main"}], acting_user=bob)
        grant = SecretGrant.objects.get(user=bob)
        confirmation = client.post(grants, {"action": "withdraw", "grant": grant.pk})
        assert confirmation.status_code == 200
        assert "flow bobs-sync" in confirmation.content.decode()
        assert SecretGrant.objects.filter(pk=grant.pk).exists()  # nothing withdrawn before the confirmation
        done = client.post(grants, {"action": "withdraw", "grant": grant.pk, "confirm": "yes"}, follow=True)
        assert "These flows stop working: flow bobs-sync." in done.content.decode()
        assert not SecretGrant.objects.filter(pk=grant.pk).exists()

    def test_a_user_without_manage_cannot_give_grants_on_the_page(self, client, people, alices_token):
        client.force_login(people[2])
        grants = reverse("admin:secrets_app_secret_grants", args=[alices_token.pk])
        assert client.post(grants, {"action": "give", "user": people[2].pk, "level": "manage"}).status_code == 403
        assert not SecretGrant.objects.exists()
