"""The apps' shared test parts: a small notes app (its manifest) and the notes API it calls."""

import textwrap

import pytest

from tests.servers import Reply


def notes_manifest(api_url: str, *, version: str = "1.0.0", extra_flows: str = "") -> str:
    return textwrap.dedent(
        f"""
        app:
          slug: notes
          name: Notes
          version: {version}
          description: Notes from a notes API.
        connection:
          kind: generic
          test: whoami
          fields:
            - {{key: api_key, label: API key, sensitive: true, required: true}}
            - {{key: region, label: Region, choices: [eu, us], default: eu}}
        flows:
          list-notes:
            public: true
            steps:
              - key: page
                kind: http_request
                method: GET
                url: "{api_url}/{{{{ connection.region }}}}/notes"
                headers: {{X-Api-Key: "{{{{ connection.api_key }}}}"}}
              - {{key: reply, kind: respond, status: 200, body: "{{{{ steps.page.body }}}}"}}
            triggers:
              - {{kind: endpoint, path: notes, methods: [GET], auth: {{kind: open}}, response: sync, sync_timeout: 300}}
          whoami:
            steps:
              - key: me
                kind: http_request
                method: GET
                url: "{api_url}/me"
                headers: {{X-Api-Key: "{{{{ connection.api_key }}}}"}}
              - {{key: out, kind: transform, value: {{identity: "{{{{ steps.me.body.name }}}}"}}}}
        {textwrap.indent(extra_flows, '  ').strip() if extra_flows else ''}
        """
    )


@pytest.fixture
def notes_api(local_server):
    """A notes API: each key belongs to one person, and sees only their notes."""
    people = {"key-ann": "ann", "key-bob": "bob"}

    def answer(request):
        person = people.get(request.headers.get("X-Api-Key", ""))
        if person is None:
            return Reply(401, {"error": "bad key"})
        if request.path == "/me":
            return Reply(200, {"name": person})
        return Reply(200, {"owner": person, "region": request.path.split("/")[1], "notes": [f"{person}'s note"]})

    local_server.handler = answer
    return local_server
