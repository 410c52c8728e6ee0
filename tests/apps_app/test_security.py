"""Apps under attack: hostile manifests, app flows reaching past their connection, and
who may see or reuse what a connection's notices and links carry."""

import io
import zipfile

import pytest

from apps_app.manifest import ManifestError, manifest_from_upload, manifest_parse
from tests.apps_app.test_install import notes_manifest


class TestHostileManifests:
    def test_yaml_aliases_are_refused_before_they_expand(self):
        # Each level nine aliases of the one before: 9**6 strings from a few lines (a real bomb
        # has more levels; six keep this test quick to fail where aliases were accepted).
        levels = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
        levels += [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, 6)]
        laughs = "  laughs:\n    steps:\n      - key: all\n        kind: transform\n        value:\n"
        laughs += "".join(f"          {level}\n" for level in levels)  # a flow after the manifest's last one
        with pytest.raises(ManifestError, match=r"aliases \(\*name\) are not allowed"):
            manifest_parse(notes_manifest("http://notes.example").rstrip() + "\n" + laughs)

    def test_a_damaged_zip_is_a_manifest_error(self):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr("notes/app.yaml", notes_manifest("http://notes.example"))
        damaged = bytearray(buffer.getvalue())
        at = damaged.index(b"slug: notes")
        damaged[at : at + 4] = b"SLUG"  # the stored CRC no longer matches
        with pytest.raises(ManifestError, match="The zip cannot be read: Bad CRC-32"):
            manifest_from_upload(bytes(damaged))
