"""GitHub: errors arrive with HTTP 200 and GitHub's own codes; scopes are comma-separated.

Without ``Accept: application/json`` (which requests-oauthlib sends) the body is
form-encoded; both shapes are read. ``bad_verification_code`` and ``bad_refresh_token``
mean the grant is gone (RFC 6749's ``invalid_grant``);
``incorrect_client_credentials`` means ``invalid_client``.
"""

from secrets_app.oauth2.client import OAuth2Hooks
from secrets_app.oauth2.quirks._body import comma_scope_to_spaces, parsed_body, replace_body

ERROR_CODES = {
    "bad_verification_code": "invalid_grant",
    "bad_refresh_token": "invalid_grant",
    "incorrect_client_credentials": "invalid_client",
    "unverified_user_email": "access_denied",
}


class GitHubHooks(OAuth2Hooks):
    def token_response(self, response):
        response = super().token_response(response)
        body = parsed_body(response)
        if body.get("error") in ERROR_CODES:
            body["error"] = ERROR_CODES[body["error"]]
        comma_scope_to_spaces(body)
        return replace_body(response, body)
