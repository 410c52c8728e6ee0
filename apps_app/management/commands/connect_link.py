from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from apps_app.models import App, Connection
from apps_app.services.connect_links import connect_link_create


class Command(BaseCommand):
    help = (
        "Make a connect link: a signed, single-use URL that expires, with which someone without an "
        "account here connects their account to an app. What it makes belongs to the operator."
    )

    def add_arguments(self, parser):
        parser.add_argument("app", help="The installed app's slug.")
        parser.add_argument("--end-user", default="", help="Who the account belongs to in your own product.")
        parser.add_argument("--return-url", default="", help="Where to send the person afterwards (allowed in settings).")
        parser.add_argument("--connection", type=int, help="Connect this existing connection again (keeps its id).")

    def handle(self, *args, app, end_user, return_url, connection, **options):
        found = App.objects.filter(slug=app).first()
        if found is None:
            raise CommandError(f"There is no installed app {app!r}.")
        existing = None
        if connection is not None:
            existing = Connection.objects.filter(pk=connection, app=found).select_related("app").first()
            if existing is None:
                raise CommandError(f"The app {app!r} has no connection {connection}.")
        try:
            issued = connect_link_create(app=found, end_user=end_user, return_url=return_url, connection=existing)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stdout.write(issued.url)
        self.stdout.write(f"Expires at {issued.expires_at.isoformat()}; it can be used once.")
