"""The secret kinds, one module each, in one explicit registry.

``SECRET_KINDS`` maps a kind's slug to its class; model choices, the admin, ``apply`` and
the API all look kinds up here. Add a kind by writing its module and listing it below.
"""

from secrets_app.kinds.api_token import ApiToken
from secrets_app.kinds.base import Capability, SecretKind
from secrets_app.kinds.basic_auth import BasicAuth
from secrets_app.kinds.generic import Generic
from secrets_app.kinds.hs256 import Hs256
from secrets_app.kinds.http_headers import HttpHeaders
from secrets_app.kinds.mysql import MySQL
from secrets_app.kinds.oauth2 import OAuth2
from secrets_app.kinds.postgresql import PostgreSQL
from secrets_app.kinds.rs256 import Rs256

SECRET_KINDS: dict[str, type[SecretKind]] = {
    kind.slug: kind for kind in (ApiToken, BasicAuth, HttpHeaders, OAuth2, Hs256, Rs256, PostgreSQL, MySQL, Generic)
}


def kinds_with(capability: Capability) -> list[str]:
    """The slugs of the kinds that offer ``capability``, to find their secrets in a query."""
    return [slug for slug, kind in SECRET_KINDS.items() if capability in kind.capabilities]
