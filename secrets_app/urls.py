from django.urls import path

from secrets_app import views

app_name = "secrets_app"

urlpatterns = [
    path(".well-known/jwks.json", views.jwks, name="jwks"),
]
