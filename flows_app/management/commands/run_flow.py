import json

from django.core.management.base import BaseCommand, CommandError

from flows_app.models import Flow
from flows_app.services.runs import FlowDisabled, RunNotAllowed, flow_run_start, flow_run_summary, flow_run_wait
from project import jsonsafe
from secrets_app import api


class Command(BaseCommand):
    help = "Start a run of a flow; with --wait, wait for it and print the run as JSON."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--input", default="{}", help="The trigger input, as JSON.")
        parser.add_argument("--connection", type=int, help="An app's flow: the id of the connection it runs with.")
        parser.add_argument("--wait", action="store_true", help="Wait until the run ends and print it.")
        parser.add_argument("--timeout", type=float, default=600, help="Seconds to wait (with --wait).")

    def handle(self, *args, slug, input, connection, wait, timeout, **options):
        flow = Flow.objects.filter(slug=slug).first()
        if flow is None:
            raise CommandError(f"There is no flow {slug!r}.")
        try:
            data = jsonsafe.loads(input)
        except ValueError as exc:
            raise CommandError(f"--input is not valid JSON: {exc}.") from None
        secret = None
        if connection is not None:
            secret = api.app_connection_get(app_slug=flow.app_slug, pk=connection)
            if secret is None:
                raise CommandError(f"There is no connection {connection} of the app {flow.app_slug or '(none)'!r}.")
        try:
            run = flow_run_start(flow=flow, input=data, trigger="cli", connection=secret)
        except (FlowDisabled, RunNotAllowed) as exc:
            raise CommandError(str(exc)) from None
        if not wait:
            self.stdout.write(json.dumps({"id": run.pk, "status": run.status}))
            return
        finished = flow_run_wait(run=run, timeout=timeout)
        if finished is None:
            raise CommandError(f"Run {run.pk} did not finish within {timeout:g} s (is a worker running?).")
        self.stdout.write(json.dumps(flow_run_summary(finished), indent=2))
        if finished.status != finished.Status.SUCCEEDED:
            raise SystemExit(1)
