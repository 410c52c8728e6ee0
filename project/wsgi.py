import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

application = get_wsgi_application()

from project.checks import refuse_start_unless_ready  # noqa: E402  (needs the app registry)

refuse_start_unless_ready()
