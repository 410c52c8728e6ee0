"""Slack (``oauth.v2.access``): HTTP 200 with ``"ok": false`` for errors, a user token
nested under ``authed_user``, comma-separated scopes.

When only user scopes were requested there is no top-level token and the user token is
lifted from ``authed_user``; otherwise the bot token is used. The workspace's name and
the authorizing user's id name the connection; the team id is kept as provider data.
"""

from secrets_app.oauth2.client import OAuth2Hooks
from secrets_app.oauth2.quirks._body import comma_scope_to_spaces, parsed_body, replace_body

ERROR_CODES = {
    "invalid_code": "invalid_grant",
    "code_already_used": "invalid_grant",
    "invalid_refresh_token": "invalid_grant",
    "invalid_grant_type": "unsupported_grant_type",
    "invalid_client_id": "invalid_client",
    "bad_client_secret": "invalid_client",
    "bad_redirect_uri": "invalid_grant",
}
USER_TOKEN_FIELDS = ("access_token", "token_type", "scope", "refresh_token", "expires_in")


class SlackHooks(OAuth2Hooks):
    def token_response(self, response):
        response = super().token_response(response)
        body = parsed_body(response)
        if body.get("ok") is False:
            code = str(body.get("error", "unknown_error"))
            return replace_body(response, {"error": ERROR_CODES.get(code, code), "error_description": f"Slack: {code}"})
        user = body.get("authed_user") or {}
        if not body.get("access_token") and user.get("access_token"):
            body.update({field: user[field] for field in USER_TOKEN_FIELDS if field in user})
        comma_scope_to_spaces(body)
        return replace_body(response, body)

    def token_result(self, token, config):
        result = super().token_result(token, config)
        team = token.get("team") or {}
        user_id = (token.get("authed_user") or {}).get("id")
        if team.get("name"):
            result.identity_name = f"{team['name']} / {user_id}" if user_id else team["name"]
        result.extra.update(
            {key: value for key, value in {"team_id": team.get("id"), "app_id": token.get("app_id")}.items() if value}
        )
        return result
