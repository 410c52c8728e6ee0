from django.core.management.base import BaseCommand

from project.config_as_code import config_dump, config_export


class Command(BaseCommand):
    help = "Write secrets and flows as YAML for 'apply', with ${...} placeholders instead of secret values."

    def add_arguments(self, parser):
        parser.add_argument("--output", "-o", help="File to write; standard output by default.")

    def handle(self, *args, output=None, **options):
        text = config_dump(config_export())
        if output:
            with open(output, "w") as handle:
                handle.write(text)
        else:
            self.stdout.write(text, ending="")
