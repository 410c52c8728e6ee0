from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from apps_app.exceptions import AppInUse
from apps_app.manifest import ManifestError, manifest_load
from apps_app.models import App
from apps_app.services.apps import app_export, app_install, app_uninstall


class Command(BaseCommand):
    help = "Install, list, export and uninstall apps (packaged integrations)."

    def add_arguments(self, parser):
        commands = parser.add_subparsers(dest="command", required=True)
        install = commands.add_parser("install", help="Install an app, or upgrade it (idempotent).")
        install.add_argument("path", help="A manifest file, or a folder with app.yaml.")
        commands.add_parser("list", help="The installed apps.")
        export = commands.add_parser("export", help="Print an app's manifest (never a value).")
        export.add_argument("slug")
        uninstall = commands.add_parser("uninstall", help="Remove an app and its flows.")
        uninstall.add_argument("slug")
        uninstall.add_argument("--force", action="store_true", help="Revoke and delete its connections first.")

    def handle(self, *args, command, **options):
        try:
            getattr(self, f"_{command}")(**options)
        except ManifestError as exc:
            raise CommandError("The app cannot be installed:\n" + "\n".join(f"  {line}" for line in exc.messages)) from None
        except (AppInUse, ValidationError) as exc:
            raise CommandError(str(exc)) from None

    def _app(self, slug: str) -> App:
        app = App.objects.filter(slug=slug).first()
        if app is None:
            raise CommandError(f"There is no installed app {slug!r}.")
        return app

    def _install(self, path, **options):
        self.stdout.write(str(app_install(manifest=manifest_load(path))))

    def _list(self, **options):
        for app in App.objects.order_by("slug"):
            count = app.connections.count()
            self.stdout.write(f"{app.slug}\t{app.version}\t{app.name}\t{count} connection(s)")

    def _export(self, slug, **options):
        self.stdout.write(app_export(app=self._app(slug)), ending="")

    def _uninstall(self, slug, force, **options):
        for warning in app_uninstall(app=self._app(slug), force=force):
            self.stderr.write(f"warning: {warning}")
        self.stdout.write(f"{slug}: uninstalled.")
