from django.urls import re_path

from flows_app import views

app_name = "flows_app"

urlpatterns = [
    re_path(r"^hooks/(?P<path>[a-z0-9][a-z0-9_/-]*?)/runs/(?P<run_id>[0-9]+)/?$", views.hook_run_status, name="hook_run_status"),
    re_path(r"^hooks/(?P<path>[a-z0-9][a-z0-9_/-]*?)/?$", views.hook, name="hook"),
]
