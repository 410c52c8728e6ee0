"""Salesforce: no ``expires_in``; ``issued_at`` in milliseconds; the API host per org.

The session lifetime is an org setting (two hours unless changed), so the expiry is
``issued_at`` plus that lifetime; a refresh on the first 401 covers orgs set shorter.
``instance_url`` is kept as provider data: flows call the org's own host.
"""

import time

from secrets_app.oauth2.client import OAuth2Hooks

DEFAULT_SESSION_SECONDS = 2 * 60 * 60


class SalesforceHooks(OAuth2Hooks):
    session_seconds = DEFAULT_SESSION_SECONDS

    def token_result(self, token, config):
        result = super().token_result(token, config)
        if result.expires_in is None:
            issued_at = token.get("issued_at")
            issued = int(issued_at) / 1000 if str(issued_at or "").isdigit() else time.time()
            result.expires_in = max(issued + self.session_seconds - time.time(), 0)
        if token.get("instance_url"):
            result.extra["instance_url"] = token["instance_url"]
        return result
