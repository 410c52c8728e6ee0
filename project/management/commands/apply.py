from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from project.config_as_code import ConfigError, config_apply, config_load


class Command(BaseCommand):
    help = (
        "Create or update secrets and flows from a YAML file (idempotent; one transaction). "
        "Acts as the operator, who may use every secret and owns what it creates, unless --as names a user."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="YAML file; '-' reads standard input.")
        parser.add_argument("--dry-run", action="store_true", help="Show what would change and change nothing.")
        parser.add_argument(
            "--as",
            dest="username",
            metavar="USERNAME",
            help="Act as this user: their grants are checked, and what is created belongs to them.",
        )

    def handle(self, *args, file, dry_run, username=None, **options):
        acting_user = self._user(username) if username else None
        text = self.stdin.read() if file == "-" else self._read(file)
        try:
            changes = config_apply(config_load(text), dry_run=dry_run, acting_user=acting_user)
        except ConfigError as exc:
            raise CommandError(
                "Nothing was applied:\n" + "\n".join(f"  {message}" for message in exc.messages)
            ) from None
        for change in changes:
            self.stdout.write(f"{'would ' if dry_run and change.action != 'unchanged' else ''}{change}")
        if dry_run:
            self.stdout.write("Dry run: nothing was changed.")

    @staticmethod
    def _user(username: str):
        user = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: username}, is_active=True).first()
        if user is None:
            raise CommandError(f"There is no active user {username!r}.")
        return user

    @staticmethod
    def _read(file: str) -> str:
        try:
            return Path(file).read_text()
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc.strerror}.") from None
