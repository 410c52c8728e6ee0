from django.core.management.base import BaseCommand

from secrets_app.services.keys import encryption_keys_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret with the first key in FLOWGATE_ENCRYPTION_KEYS. "
        "Safe while the product runs. Afterwards the older keys can be removed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=200)

    def handle(self, *args, batch_size, **options):
        report = encryption_keys_rotate(batch_size=batch_size)
        self.stdout.write(f"Re-encrypted {report.rows} values with the newest key.")
