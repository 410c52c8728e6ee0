"""A separate process that uses one OAuth2 connection at a given moment.

    python -m tests.secrets_app.oauth2.use_connection SECRET URL START_AT

Run by the concurrency test with TEST_DATABASE_URL pointing at the test database; prints
the token it sent, as the API server saw it.
"""

import os
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from project import outbound  # noqa: E402
from secrets_app import api  # noqa: E402


def main(secret_name: str, url: str, start_at: float) -> None:
    auth = api.auth_for(secret_name)
    time.sleep(max(0.0, start_at - time.time()))
    response = outbound.request("GET", url, auth=auth)
    print(response.json()["headers"]["Authorization"].removeprefix("Bearer "))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
