from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class FlowgateAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with Flowgate's site (``project.admin_site``)."""

    default = False  # named in INSTALLED_APPS; ProjectConfig is this module's default
    default_site = "project.admin_site.FlowgateAdminSite"


class ProjectConfig(AppConfig):
    """Holds the project-wide system checks; the project package has no models."""

    name = "project"
    verbose_name = "Flowgate"

    def ready(self):
        from project import checks  # noqa: F401  (registers the checks)
