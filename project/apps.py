from django.apps import AppConfig


class ProjectConfig(AppConfig):
    """Holds the project-wide system checks; the project package has no models."""

    name = "project"
    verbose_name = "Flowgate"

    def ready(self):
        from project import checks  # noqa: F401  (registers the checks)
