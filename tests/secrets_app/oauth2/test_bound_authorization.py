"""Authorizations started without a user (by a connect link): bound to what started them."""

import pytest

from secrets_app.exceptions import AuthorizationFailed, OAuth2Error
from secrets_app.models import OAuth2AuthorizationRequest
from secrets_app.services.oauth2 import oauth2_authorization_complete, oauth2_authorization_start
from tests.provider import query

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_authorization_without_a_user_must_be_bound(oauth2_secret):
    with pytest.raises(OAuth2Error, match="must be bound"):
        oauth2_authorization_start(secret=oauth2_secret("crm"), user=None, session_key="session-1")
    assert not OAuth2AuthorizationRequest.objects.exists()


@pytest.mark.parametrize("bound_to", ["", "connect-link:2"])
def test_only_the_same_binding_in_the_same_session_completes_it(oauth2_secret, bound_to):
    secret = oauth2_secret("crm")
    url = oauth2_authorization_start(secret=secret, user=None, session_key="session-1", bound_to="connect-link:1")
    attempt = OAuth2AuthorizationRequest.objects.get()
    assert attempt.user is None and attempt.bound_to == "connect-link:1" and attempt.pkce["code_verifier"]
    params = {"state": query(url)["state"], "code": "any"}
    with pytest.raises(AuthorizationFailed, match="another session"):
        oauth2_authorization_complete(
            secret_name="crm", user=None, session_key="session-1", params=params, bound_to=bound_to
        )
