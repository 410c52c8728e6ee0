"""Development keys, generated once into a git-ignored file.

With DEBUG on and no SECRET_KEY or FLOWGATE_ENCRYPTION_KEYS in the environment, the
product still has to start on a laptop. Keys are generated the first time and kept in
``var/dev-keys.json`` so that a restart can still decrypt what the vault stored.
Production never reaches this module: with DEBUG off, missing keys stop start-up
(see ``project/checks.py``). The settings tell the user, once per launch, that these keys
are in use.
"""

import json
import os
import secrets
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet


def development_keys(path: Path) -> dict[str, str]:
    """Return the development SECRET_KEY and Fernet key, creating the file if needed.

    Several processes (web, worker, beat) may start at once; the file is created with an
    atomic link so that they all end up with the same keys.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        generated = {
            "SECRET_KEY": secrets.token_urlsafe(50),
            "FLOWGATE_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".dev-keys.")
        with os.fdopen(fd, "w") as handle:
            json.dump(generated, handle)
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won the race; its keys are the ones to use
        finally:
            os.unlink(tmp)
    return json.loads(path.read_text())
