"""A separate process that uses one OAuth2 connection when the parent says go.

    python -m tests.apps_app.use_revoked_connection SECRET URL

Run by the notices test with TEST_DATABASE_URL pointing at the test database. Prints
"ready" once Django is loaded, waits for a line on stdin (the parent sends it to every
process at once, when all are ready), calls the API and prints the error's class name
(or "ok").
"""

import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from project import outbound  # noqa: E402
from secrets_app import api  # noqa: E402


def main(secret_name: str, url: str) -> None:
    auth = api.auth_for(secret_name)
    print("ready", flush=True)
    sys.stdin.readline()
    try:
        outbound.request("GET", url, auth=auth)
    except Exception as exc:  # reported to the parent, which asserts on it
        print(type(exc).__name__, flush=True)
    else:
        print("ok", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
