"""jwt: a Bearer JWT (RFC 6750) verified with an HS256 secret, an RS256 key or a JWKS URL.

The secret's kind names the one accepted algorithm (HS256 or RS256): ``alg: none`` and
algorithm confusion are refused before any key is used, and ``jku``/``x5u``/``jwk``
headers are never followed (``secrets_app.jose``). ``exp`` is required, ``nbf``
honoured with a small leeway; ``iss`` and ``aud`` are compared exactly when set; every
required scope must be in the ``scope`` (space-separated) or ``scp`` claim.

401 ``Bearer error="invalid_token"`` for a missing, malformed, badly signed or expired
token; 403 ``Bearer error="insufficient_scope"`` for a valid token without a scope.
"""

from flows_app.triggers.base import REALM, Caller, EndpointAuth, Forbidden
from project.declarative import Field
from secrets_app.exceptions import InsufficientScope, VaultError


class JwtBearer(EndpointAuth):
    slug = "jwt"
    label = "JWT bearer token"
    description = "The caller sends 'Authorization: Bearer <JWT>' signed by the secret's key."
    secret_kinds = ("hs256", "rs256")
    challenge = f'Bearer {REALM}, error="invalid_token"'
    fields = (
        Field("issuer", "Required issuer (iss)", required=False, help_text="Compared exactly."),
        Field("audience", "Required audience (aud)", required=False, help_text="Compared exactly."),
        Field("scopes", "Required scopes", type="list", required=False, help_text="All of them, e.g. orders:write."),
    )

    @classmethod
    def curl_arguments(cls, config):
        return ["-H", "Authorization: Bearer $TOKEN"]

    def authenticate(self, request, *, config, secret):
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise self.refuse()
        scopes = config.get("scopes", [])
        try:
            claims = secret.handler.verify_jws(
                token.strip(), audience=config.get("audience") or None, issuer=config.get("issuer") or None, scopes=scopes
            )
        except InsufficientScope:
            raise Forbidden(f'Bearer {REALM}, error="insufficient_scope", scope="{" ".join(scopes)}"') from None
        except VaultError:
            raise self.refuse() from None
        subject = str(claims.get("sub") or claims.get("client_id") or "")
        # A subject is unique only within its issuer; a token naming no subject names nobody.
        identity = f"{claims.get('iss', '')}\0{subject}" if subject else ""
        return Caller(mode=self.slug, subject=subject, claims=claims, identity=identity)
