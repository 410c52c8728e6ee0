"""Google: revoking a token (access or refresh) removes the application's access to the
account, so every token of the grant stops working, those issued later included."""

from secrets_app.oauth2.client import OAuth2Hooks


class GoogleHooks(OAuth2Hooks):
    revocation_ends_the_grant = True
