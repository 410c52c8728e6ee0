import pytest

from project import outbound
from secrets_app.models import OAuth2Connection
from tests.contracts import SecretKindContract

pytestmark = pytest.mark.django_db(transaction=True)


class TestOAuth2Contract(SecretKindContract):
    kind = "oauth2"

    @pytest.fixture
    def definition(self, provider, local_server):
        self.server = local_server
        return {"client_secret": "provider-client-secret-contract-secret-0123456789"}

    @pytest.fixture
    def secret(self, connected, definition):
        return connected(self.name)

    def secret_values(self, definition):
        tokens = OAuth2Connection.objects.get(secret__name=self.name).tokens
        return [definition["client_secret"], tokens["access_token"], tokens["refresh_token"]]

    def admin_pages(self, secret):
        from django.urls import reverse

        return [
            *super().admin_pages(secret),
            reverse("admin:secrets_app_secret_oauth2", args=[secret.pk]),
            reverse("admin:secrets_app_oauth2connection_changelist"),
        ]

    def exercise(self, vault, name, definition):
        outbound.request("GET", self.server.url, auth=vault.auth_for(name))
        token = OAuth2Connection.objects.get(secret__name=name).tokens["access_token"]
        assert self.server.last.headers["Authorization"] == f"Bearer {token}"
