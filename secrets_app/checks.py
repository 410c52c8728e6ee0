"""System checks for what the vault needs to start: usable encryption keys."""

from cryptography.fernet import Fernet
from django.conf import settings
from django.core import checks

from project.checks import TAG


@checks.register(TAG)
def check_encryption_keys(app_configs=None, **kwargs):
    keys = list(getattr(settings, "FLOWGATE_ENCRYPTION_KEYS", []))
    if not keys:
        return [
            checks.Error(
                "FLOWGATE_ENCRYPTION_KEYS is not set: the vault cannot encrypt or decrypt secrets.",
                hint="Set FLOWGATE_ENCRYPTION_KEYS to one or more comma-separated Fernet keys, newest first "
                "(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())').",
                id="flowgate.E003",
            )
        ]
    errors = []
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key.encode())
        except (ValueError, TypeError):
            errors.append(
                checks.Error(
                    f"Key number {position} in FLOWGATE_ENCRYPTION_KEYS is not a Fernet key.",
                    hint="Each key is 32 random bytes, url-safe base64-encoded (44 characters).",
                    id="flowgate.E004",
                )
            )
    return errors
