"""Notion: the token endpoint takes a JSON body (with HTTP Basic client authentication)
and names the connected account in its answer (``owner.user``, or the workspace)."""

from oauthlib.oauth2.rfc6749.parameters import parse_token_response

from project import outbound
from secrets_app.app_settings import vault_settings
from secrets_app.oauth2.client import OAuth2Hooks


def _json_body(token_url, headers, request_kwargs):
    request_kwargs["json"] = request_kwargs.pop("data", {})
    return token_url, {**headers, "Content-Type": "application/json"}, request_kwargs


class NotionHooks(OAuth2Hooks):
    def session(self, config, **kwargs):
        session = super().session(config, **kwargs)
        session.register_compliance_hook("access_token_request", _json_body)
        return session

    def refresh(self, config, *, refresh_token):
        # requests-oauthlib always form-encodes a refresh; Notion wants JSON.
        auth, body = self.client_authentication(config)

        def post():
            response = outbound.request(
                "POST",
                config.token_url,
                auth=auth,
                json={"grant_type": "refresh_token", "refresh_token": refresh_token, **body},
                headers={"Accept": "application/json"},
                limits=outbound.Limits(timeout=vault_settings.outbound_timeout_seconds, max_response_bytes=256 * 1024),
            )
            token = dict(parse_token_response(self.token_response(response).text))
            token.setdefault("refresh_token", refresh_token)
            return token

        return self.token_result(self._call(post), config)

    def token_result(self, token, config):
        result = super().token_result(token, config)
        owner = (token.get("owner") or {}).get("user") or {}
        email = (owner.get("person") or {}).get("email")
        result.identity_name = email or owner.get("name") or token.get("workspace_name")
        if token.get("workspace_id"):
            result.extra.update(workspace_id=token["workspace_id"], workspace_name=token.get("workspace_name", ""))
        return result
