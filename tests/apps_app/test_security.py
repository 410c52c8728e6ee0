"""Apps under attack: hostile manifests, app flows reaching past their connection, and
who may see or reuse what a connection's notices and links carry."""

import io
import zipfile

import pytest
from django.core.exceptions import ValidationError

from apps_app.manifest import ManifestError, manifest_from_upload, manifest_parse
from apps_app.services.apps import app_install
from apps_app.services.connections import connection_create
from flows_app.models import Flow, FlowRun, Step
from flows_app.services.config import flow_spec_from_data
from flows_app.services.flows import flow_save
from flows_app.services.runs import flow_run_inline
from tests.apps_app.test_install import notes_api, notes_manifest  # noqa: F401 (a fixture)


class TestHostileManifests:
    def test_yaml_aliases_are_refused_before_they_expand(self):
        # Each level nine aliases of the one before: 9**6 strings from a few lines (a real bomb
        # has more levels; six keep this test quick to fail where aliases were accepted).
        levels = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
        levels += [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, 6)]
        laughs = "  laughs:\n    steps:\n      - key: all\n        kind: transform\n        value:\n"
        laughs += "".join(f"          {level}\n" for level in levels)  # a flow after the manifest's last one
        with pytest.raises(ManifestError, match=r"aliases \(\*name\) are not allowed"):
            manifest_parse(notes_manifest("http://notes.example").rstrip() + "\n" + laughs)

    def test_a_damaged_zip_is_a_manifest_error(self):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr("notes/app.yaml", notes_manifest("http://notes.example"))
        damaged = bytearray(buffer.getvalue())
        at = damaged.index(b"slug: notes")
        damaged[at : at + 4] = b"SLUG"  # the stored CRC no longer matches
        with pytest.raises(ManifestError, match="The zip cannot be read: Bad CRC-32"):
            manifest_from_upload(bytes(damaged))


RELAY = """
  relay:
    public: true
    steps:
      - {key: who, kind: call_flow, flow: notes/whoami}
"""


@pytest.mark.django_db(transaction=True)
class TestAppFlowsReachOnlyTheirConnection:
    """An app's flows run as the operator, who may use every secret: what keeps a user of a
    connection from steering other secrets through them is that they reach nothing else."""

    def test_an_app_flow_calling_a_flow_outside_its_app_is_not_installed(self, notes_api):
        relay = RELAY.replace("flow: notes/whoami", "flow: payroll")
        with pytest.raises(ManifestError) as failure:
            app_install(manifest=manifest_parse(notes_manifest(notes_api.url).rstrip() + relay))
        assert failure.value.messages == [
            "flows.relay.steps[0]: Calls the flow(s) payroll; an app's flows call only the app's own flows (notes/<flow>)."
        ]

    def test_an_app_flow_changed_to_call_another_flow_fails_and_that_flow_never_runs(self, notes_api):
        app = app_install(manifest=manifest_parse(notes_manifest(notes_api.url).rstrip() + RELAY)).app
        connection = connection_create(app=app, data={"api_key": "key-ann"})
        relay = Flow.objects.get(slug="notes/relay")
        assert flow_run_inline(flow=relay, input={}, connection=connection.secret, trigger="t", timeout=30).status == "succeeded"

        payroll = {"steps": [{"key": "pay", "kind": "transform", "value": {"salary": 100}}]}
        flow_save(spec=flow_spec_from_data("payroll", payroll))
        Step.objects.filter(flow=relay).update(config={"flow": "payroll"})  # as a change past the checks would
        run = flow_run_inline(flow=relay, input={}, connection=connection.secret, trigger="t", timeout=30)
        assert run.status == FlowRun.Status.FAILED
        assert "belongs to the app 'notes'; it calls only that app's flows" in run.error
        assert not FlowRun.objects.filter(flow__slug="payroll").exists()

    def test_changing_an_app_flow_needs_manage_on_every_one_of_its_connections(
        self, notes_api, staff_user, django_user_model
    ):
        app = app_install(manifest=manifest_parse(notes_manifest(notes_api.url))).app
        ann, bob = staff_user("ann"), staff_user("bob")
        connection_create(app=app, data={"api_key": "key-ann"}, acting_user=ann)
        connection_create(app=app, data={"api_key": "key-bob"}, acting_user=bob)
        definition = app.manifest["flows"]["list-notes"]
        # Sending every connection's key elsewhere, as the flow runs for each of them.
        exfiltrating = {key: value for key, value in definition.items() if key not in ("public", "triggers")}
        exfiltrating["description"] = "also posts the key"
        spec = flow_spec_from_data("list-notes", exfiltrating, app_slug="notes")
        for user in (ann, bob):
            with pytest.raises(ValidationError, match="may not change the app 'notes'"):
                flow_save(spec=spec, acting_user=user)
        assert Flow.objects.get(slug="notes/list-notes").description == ""

        root = django_user_model.objects.create_superuser("root", password="pw")
        flow_save(spec=spec, acting_user=root)
        assert Flow.objects.get(slug="notes/list-notes").description == "also posts the key"
