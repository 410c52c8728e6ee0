"""The admin site: the product's sections first, and a front page that says what needs doing.

``FlowgateAdminConfig`` (named in INSTALLED_APPS instead of ``django.contrib.admin``) makes
``FlowgateAdminSite`` the default site, so ``admin.site`` and ``@admin.register`` everywhere
keep working. It lives in flows_app, not in project/, because the front page reads flows and
the vault, and flows_app may use secrets_app while project/ plumbing uses neither.
"""

from __future__ import annotations

from django.contrib.admin.apps import AdminConfig

from project.admin_site import SelectionCheckingAdminSite


class FlowgateAdminSite(SelectionCheckingAdminSite):
    site_header = site_title = "Flowgate"
    index_title = "Overview"
    index_template = "admin/flowgate/index.html"
    site_url = None  # there is no public site: "View site" led back to the admin
    #: The product's sections, in this order, before the libraries' (auth, OAuth2 provider,
    #: periodic tasks), which stay alphabetical. "apps_app" once that app is installed.
    product_sections = ("flows_app", "secrets_app", "apps_app")

    def get_app_list(self, request, app_label=None):
        apps = super().get_app_list(request, app_label)
        rank = {label: position for position, label in enumerate(self.product_sections)}
        registered = {model: position for position, model in enumerate(self._registry)}
        for app in apps:
            if app["app_label"] in rank:  # the product's models in the order their admin registers them
                app["models"].sort(key=lambda entry: registered[entry["model"]])
        return sorted(apps, key=lambda app: rank.get(app["app_label"], len(rank)))

    def index(self, request, extra_context=None):
        # Imported here: this module is loaded with the app registry (INSTALLED_APPS names
        # its config), before the models the front page reads can be imported.
        from flows_app.dashboard import dashboard_context

        return super().index(request, {**dashboard_context(request, self), **(extra_context or {})})


class FlowgateAdminConfig(AdminConfig):
    default_site = "flows_app.admin_site.FlowgateAdminSite"
