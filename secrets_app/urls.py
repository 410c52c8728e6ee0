from django.urls import path

from secrets_app import views

app_name = "secrets_app"

urlpatterns = [
    path(".well-known/jwks.json", views.jwks, name="jwks"),
    path("oauth/<slug:name>/authorize/", views.oauth2_authorize, name="oauth2_authorize"),
    path("oauth/<slug:name>/callback/", views.oauth2_callback, name="oauth2_callback"),
]
