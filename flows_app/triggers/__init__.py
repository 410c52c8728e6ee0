"""Endpoint triggers' authentication modes, one module each, in one explicit registry."""

from flows_app.triggers.api_key import ApiKey
from flows_app.triggers.base import EndpointAuth
from flows_app.triggers.basic import BasicAuthentication
from flows_app.triggers.jwt import JwtBearer
from flows_app.triggers.open import OpenAccess
from flows_app.triggers.signature import Signature

ENDPOINT_AUTH: dict[str, type[EndpointAuth]] = {
    mode.slug: mode for mode in (OpenAccess, BasicAuthentication, ApiKey, Signature, JwtBearer)
}
