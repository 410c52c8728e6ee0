"""jwt: sign or verify a JWT, encrypt or decrypt a JWE, with an HS256 or RS256 secret."""

from django.core.exceptions import ValidationError

from flows_app.steps.base import StepError, StepKind, StepResult
from project.declarative import Field
from secrets_app.exceptions import VaultError

OPERATIONS = (("sign", "Sign a JWT"), ("verify", "Verify a JWT"), ("encrypt", "Encrypt (JWE)"), ("decrypt", "Decrypt (JWE)"))
NEEDS = {"sign": "claims", "encrypt": "payload", "verify": "token", "decrypt": "token"}


class Jwt(StepKind):
    slug = "jwt"
    label = "JWT / JWE"
    description = "Signs or verifies a JWT, encrypts or decrypts a JWE."
    secret_kinds = ("hs256", "rs256")
    secret_required = True
    pure = True
    fields = (
        Field("operation", "Operation", type="choice", choices=OPERATIONS, default="sign"),
        Field("claims", "Claims (sign)", type="json", required=False, template=True),
        Field("expires_in", "Lifetime in seconds (sign)", type="integer", default=300, min_value=1, max_value=31_536_000),
        Field("payload", "Payload (encrypt)", type="json", required=False, template=True),
        Field("token", "Token (verify, decrypt)", required=False, template=True),
        Field("audience", "Required audience (verify)", required=False, template=True),
        Field("issuer", "Required issuer (verify)", required=False, template=True),
        Field("scopes", "Required scopes (verify)", type="list", required=False),
    )

    @classmethod
    def validate(cls, config, *, step_keys):
        needed = NEEDS[config["operation"]]
        if config.get(needed) in (None, ""):
            raise ValidationError({needed: f"Required to {config['operation']}."})

    def execute(self, context):
        config, vault, name = context.config, context.vault, context.secret_name
        try:
            if config["operation"] == "sign":
                if not isinstance(config["claims"], dict):
                    raise StepError("The claims must be an object.")
                output = {"token": vault.sign_jws(name, config["claims"], expires_in=config["expires_in"])}
            elif config["operation"] == "verify":
                claims = vault.verify_jws(
                    name,
                    str(config["token"]),
                    audience=config.get("audience") or None,
                    issuer=config.get("issuer") or None,
                    scopes=config.get("scopes", []),
                )
                output = {"claims": claims}
            elif config["operation"] == "encrypt":
                output = {"token": vault.encrypt_jwe(name, config["payload"])}
            else:
                plaintext = vault.decrypt_jwe(name, str(config["token"])).decode(errors="replace")
                output = {"plaintext": plaintext}
        except VaultError as exc:
            raise StepError(str(exc)) from None
        return StepResult(output=output)
