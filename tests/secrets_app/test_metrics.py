"""OAuth2 refreshes in /metrics: each request to a provider counted once, by its result."""

import pytest

from secrets_app.exceptions import ReauthorizationRequired, TokenEndpointUnavailable
from secrets_app.oauth2.tokens import access_token_get
from tests.secrets_app.oauth2.test_tokens import token_endpoint_secret
from tests.servers import RecordingServer, Reply

REFRESHES = "flowgate_oauth2_refreshes_total"


@pytest.fixture
def token_endpoint():
    """``token_endpoint(reply)``: a local token endpoint that always gives ``reply``."""
    servers = []

    def serve(reply: Reply) -> RecordingServer:
        servers.append(RecordingServer(lambda request: reply))
        return servers[-1]

    yield serve
    for server in servers:
        server.stop()


def test_refreshes_are_counted_by_result(db, scrape, token_endpoint):
    fresh = token_endpoint(Reply(body={"access_token": "new-access-2", "expires_in": 3600}))
    refused = token_endpoint(Reply(status=400, body={"error": "invalid_grant"}))
    down = token_endpoint(Reply(status=503))
    before = scrape()

    assert access_token_get(token_endpoint_secret(fresh, name="fresh")) == "new-access-2"
    with pytest.raises(ReauthorizationRequired):
        access_token_get(token_endpoint_secret(refused, name="refused"))
    with pytest.raises(TokenEndpointUnavailable):
        access_token_get(token_endpoint_secret(down, name="down"))

    after = scrape()
    for result in ["succeeded", "needs_reauthorization", "failed"]:
        assert after.value(REFRESHES, result=result) - before.value(REFRESHES, result=result) == 1, result
