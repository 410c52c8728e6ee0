"""An app's OAuth2 operations as flows: running them for the vault, and "Customize".

The vault decides when an operation runs and what its answer means
(``secrets_app.oauth2.operations``); it cannot run flows itself, so this module's
``operation_flow_run`` is installed as its runner when Django starts (``apps.py``).

"Customize" writes the three operations as flows of the app, doing what the standard
operations do (a form POST to the token endpoint, the answer shaped as the contract asks),
as the starting point for an app whose provider does something else.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

from django.core.exceptions import ValidationError

from apps_app.manifest import Manifest
from apps_app.models import App
from apps_app.services.apps import AppChange, app_install, connection_secret_data
from flows_app.models import Flow, FlowRun
from flows_app.services.runs import RunNotAllowed, flow_run_inline
from secrets_app.app_settings import vault_settings
from secrets_app.exceptions import SecretMisconfigured
from secrets_app.oauth2.operations import OperationFailed
from secrets_app.oauth2.providers import presets


def operation_flow_run(
    flow_slug: str,
    input: dict[str, Any],
    secret,
    *,
    sensitive: Iterable[str],
    output_secrets: Callable[[Any], Iterable[str]],
) -> Any:
    """Run an operation flow for the connection ``secret``, in this process; its output.

    Bounded by the outbound timeout, as the standard operation's request is: a refresh
    runs while other processes wait for its lease.
    """
    flow = Flow.objects.filter(slug=flow_slug).select_related("owner").first()
    if flow is None or not flow.enabled:
        raise SecretMisconfigured(f"There is no enabled flow {flow_slug!r} for this operation.")
    try:
        run = flow_run_inline(
            flow=flow,
            input=input,
            connection=secret,
            trigger="oauth2_operation",
            timeout=vault_settings.outbound_timeout_seconds,
            sensitive=sensitive,
            output_secrets=output_secrets,
        )
    except RunNotAllowed as exc:
        raise SecretMisconfigured(str(exc)) from None
    if run.status != FlowRun.Status.SUCCEEDED:
        raise OperationFailed(f"run #{run.pk} {run.status}: {run.error}")
    return run.output


# -- Customize ---------------------------------------------------------------------------

#: The flows "Customize" writes, by operation.
CUSTOM_FLOWS = {"authorize_url": "oauth2-authorize-url", "exchange": "oauth2-exchange", "refresh": "oauth2-refresh"}

#: The authorization request of RFC 6749 §4.1.1 with RFC 7636 PKCE, as one template.
AUTHORIZE_URL = (
    "{{ connection.authorize_url }}{{ '&' if '?' in connection.authorize_url else '?' }}{{ ("
    "[('response_type', 'code'), ('client_id', connection.client_id), ('redirect_uri', trigger.redirect_uri),"
    " ('state', trigger.state)]"
    " + ([('scope', trigger.scope)] if trigger.scope else [])"
    " + ([('code_challenge', trigger.code_challenge), ('code_challenge_method', 'S256')]"
    " if trigger.code_challenge else [])"
    " + ((connection.extra_authorize_params or {}) | items | list)) | urlencode }}"
)
#: client_secret_basic: id and secret form-encoded, then Base64 (RFC 6749 §2.3.1).
BASIC_AUTHORIZATION = (
    "Basic {{ ((connection.client_id | urlencode) ~ ':' ~ (connection.client_secret | urlencode)) | b64encode }}"
)


def _token_request(grant: dict[str, str], client_auth: str) -> list[dict[str, Any]]:
    """A token endpoint request (RFC 6749 §4.1.3, §6) and its answer in the contract's shape.

    An error the provider answers with 400 or 401 (§5.2) is passed on as ``error``, so that
    a refused grant asks the user to reconnect, as the standard operation does.
    """
    headers = {"Accept": "application/json"}
    body = dict(grant)
    if client_auth == "basic":
        headers["Authorization"] = BASIC_AUTHORIZATION
    else:
        body["client_id"] = "{{ connection.client_id }}"
        if client_auth == "post":
            body["client_secret"] = "{{ connection.client_secret }}"
    # The answer as oauthlib reads it: JSON, or a form-encoded text.
    answer = "(steps.token.body if steps.token.body is mapping else (steps.token.body or '') | fromform)"
    return [
        {
            "key": "token",
            "kind": "http_request",
            "method": "POST",
            "url": "{{ connection.token_url }}",
            "headers": headers,
            "body_type": "form",
            "body": body,
            "success_statuses": "2xx, 400, 401",
            "follow_redirects": False,
        },
        {
            "key": "tokens",
            "kind": "transform",
            "value": {
                "access_token": f"{{{{ {answer}.access_token | default(none) }}}}",
                "expires_in": f"{{{{ {answer}.expires_in | default(none) }}}}",
                "refresh_token": f"{{{{ {answer}.refresh_token | default(none) }}}}",
                "identity": None,
                "data": {},
                "error": f"{{{{ {answer}.error | default(none) }}}}",
                "error_description": f"{{{{ {answer}.error_description | default(none) }}}}",
            },
        },
    ]


def standard_operation_flows(app: App) -> dict[str, dict[str, Any]]:
    """The three operations as the standard ones do them, as manifest flows of ``app``.

    The client authenticates as the app's connections do now. What a provider's hooks
    class (a preset's quirks, in Python) changes is not in them: those flows are where
    that is now written.
    """
    settings = connection_secret_data(app)
    preset = presets().get(settings.get("preset") or "", {})
    client_auth = settings.get("client_auth") or preset.get("client_auth") or "basic"
    code = {
        "grant_type": "authorization_code",
        "code": "{{ trigger.code }}",
        "redirect_uri": "{{ trigger.redirect_uri }}",
        "code_verifier": "{{ trigger.code_verifier }}",
    }
    refresh = {"grant_type": "refresh_token", "refresh_token": "{{ trigger.refresh_token }}"}
    return {
        CUSTOM_FLOWS["authorize_url"]: {
            "description": "Builds the provider's authorization URL (input: redirect_uri, state, code_challenge, "
            "scope; output: authorize_url).",
            "steps": [{"key": "url", "kind": "transform", "value": {"authorize_url": AUTHORIZE_URL}}],
        },
        CUSTOM_FLOWS["exchange"]: {
            "description": "Exchanges the authorization code (input: code, redirect_uri, code_verifier, callback; "
            "output: access_token, expires_in, refresh_token, identity, data).",
            "steps": _token_request(code, client_auth),
        },
        CUSTOM_FLOWS["refresh"]: {
            "description": "Refreshes the access token (input: refresh_token; output as the exchange's; no "
            "refresh_token keeps the old one).",
            "steps": _token_request(refresh, client_auth),
        },
    }


def app_operations_customize(*, app: App, acting_user=None) -> AppChange:
    """Write the operations the app leaves standard as its own private flows and name them
    in its connection settings, which its connections then use.

    Installed through ``app_install``, as any change of an app's flows and settings is, so
    an export carries them. Raises ValidationError for an app that cannot have them.
    """
    if app.connection_kind != App.ConnectionKind.OAUTH2:
        raise ValidationError({"__all__": f"{app.name} connects with fields; it has no OAuth2 operations."})
    data = copy.deepcopy(app.manifest)
    connection = data["connection"]
    if connection.get("grant_type") == "client_credentials":
        raise ValidationError({"__all__": "Operations replace the authorization code grant's steps."})
    operations = connection.setdefault("operations", {})
    wanted = {operation: name for operation, name in CUSTOM_FLOWS.items() if operation not in operations}
    if not wanted:
        raise ValidationError({"__all__": f"Every OAuth2 operation of {app.name} is already a flow."})
    if taken := sorted(name for name in wanted.values() if name in data["flows"]):
        raise ValidationError({"__all__": f"{app.name} already has flows named {', '.join(taken)}."})
    standard = standard_operation_flows(app)
    for operation, name in wanted.items():
        data["flows"][name] = standard[name]
        operations[operation] = name
    return app_install(manifest=Manifest(data=data, icon=app.icon), acting_user=acting_user)
