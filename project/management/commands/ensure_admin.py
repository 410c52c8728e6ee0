import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Make sure a local administrator exists. Uses FLOWGATE_ADMIN_USER and "
        "FLOWGATE_ADMIN_PASSWORD when set; otherwise creates 'admin' with a generated "
        "password, printed once, unless a superuser already exists."
    )

    def handle(self, *args, **options):
        User = get_user_model()
        username = os.environ.get("FLOWGATE_ADMIN_USER", "").strip()
        password = os.environ.get("FLOWGATE_ADMIN_PASSWORD", "")
        if username and password:
            user, created = User.objects.get_or_create(username=username)
            user.is_staff = user.is_superuser = True
            user.set_password(password)
            user.save()
            self.stdout.write(f"Admin user {username!r} {'created' if created else 'updated'} from the environment.")
            return
        existing = User.objects.filter(is_superuser=True).order_by("pk").first()
        if existing is not None:
            self.stdout.write(f"Log in as {existing.get_username()!r} (password as set before).")
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username="admin", email="", password=password)
        self.stdout.write(self.style.SUCCESS(f"Created admin user 'admin' with password: {password}"))
        self.stdout.write("This password is shown once; change it in the admin.")
