"""The admin site's plumbing: Django's, refusing malformed selections with a 400 instead of a 500.

Django's action handling filters ``pk__in`` the posted ``_selected_action`` values as
they come, and a value that is not a primary key (``?ids=abc`` from a stale page, a
crafted POST) raises deep in the ORM. Checked here, once, for every registered
ModelAdmin, the third-party ones (django-celery-beat, django-oauth-toolkit) included.
"""

import functools

from django.contrib import admin
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.http import HttpResponseBadRequest


def _refusing_malformed_selections(view, model):
    @functools.wraps(view)
    def checked(request, *args, **kwargs):
        if request.method == "POST":
            try:
                for value in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME):
                    model._meta.pk.to_python(value)
            except ValidationError:
                return HttpResponseBadRequest("The selection names objects that cannot exist.")
        return view(request, *args, **kwargs)

    return checked


class SelectionCheckingAdminSite(admin.AdminSite):
    """The base of the product's admin site (``flows_app.admin_site``)."""

    def admin_view(self, view, cacheable=False):
        model_admin = getattr(view, "__self__", None)
        if isinstance(model_admin, admin.ModelAdmin):
            view = _refusing_malformed_selections(view, model_admin.model)
        return super().admin_view(view, cacheable)
