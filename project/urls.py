from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from apps_app.api import api as apps_api
from project.metrics import metrics_view

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("admin/", admin.site.urls),
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path("metrics", metrics_view, name="metrics"),
    path("", include("secrets_app.urls")),
    path("", include("flows_app.urls")),
    path("", include("apps_app.urls")),
    path("api/", apps_api.urls),
]
