from django.urls import path

from apps_app import views

app_name = "apps_app"

urlpatterns = [
    path("apps/<slug:slug>/oauth2/callback/", views.oauth2_callback, name="oauth2_callback"),
    path("connect/", views.connect_page, name="connect"),
]
