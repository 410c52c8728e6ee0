"""Reading an app's manifest: one YAML file, a folder with ``app.yaml`` (and its icon), or
an upload of either (a YAML file, or a zip of the folder).

The manifest's shape is checked by ``manifest.schema.json``; its flows are then checked by
the same code as the ``flows:`` section of the ``apply`` file (``flows_app.services.config``),
so a flow means the same thing in both. Errors name their place:
``connection.fields[0].key: 'API key' does not match '^[a-z_][a-z0-9_]*$'``.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    import jsonschema

SCHEMA_PATH = Path(__file__).with_name("manifest.schema.json")
MANIFEST_NAME = "app.yaml"
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_ICON_BYTES = 256 * 1024
MAX_UPLOAD_BYTES = MAX_MANIFEST_BYTES + MAX_ICON_BYTES + 64 * 1024  # a zip of both, stored uncompressed
ICON_TYPES = {".svg": "image/svg+xml", ".png": "image/png"}


class _ManifestLoader(yaml.SafeLoader):
    """``yaml.safe_load`` without aliases: a small file of nested aliases (billion laughs)
    is cheap to parse but expands without bound once checked, stored as JSON or exported."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a manifest", event.start_mark)
        return super().compose_node(parent, index)


class ManifestError(Exception):
    """The manifest cannot be installed; ``messages`` say where and why."""

    def __init__(self, messages: list[str]):
        self.messages = messages
        super().__init__("\n".join(messages))


@dataclass(frozen=True)
class Manifest:
    data: dict[str, Any]
    icon: str  # a data: URL, or ""

    @property
    def slug(self) -> str:
        return self.data["app"]["slug"]

    @property
    def connection(self) -> dict[str, Any]:
        return self.data["connection"]


@functools.cache
def _schema_validator() -> jsonschema.Draft202012Validator:
    # Imported here: 4 MB that only installing an app needs, not every process that imports this.
    import jsonschema

    return jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))


def _place(path) -> str:
    place = ""
    for part in path:
        place += f"[{part}]" if isinstance(part, int) else (f".{part}" if place else str(part))
    return place or "(the manifest)"


def manifest_parse(text: str | bytes, *, read_file=None) -> Manifest:
    """Check a manifest's text; ``read_file(name) -> bytes`` reads its icon beside it."""
    if len(text) > MAX_MANIFEST_BYTES:
        raise ManifestError([f"The manifest is larger than {MAX_MANIFEST_BYTES // 1024} KB."])
    try:
        data = yaml.load(text, Loader=_ManifestLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ManifestError([f"The manifest is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}."]) from None
    errors = sorted(_schema_validator().iter_errors(data), key=lambda error: list(map(str, error.absolute_path)))
    if errors:
        raise ManifestError([f"{_place(error.absolute_path)}: {error.message}" for error in errors])
    return Manifest(data=data, icon=_icon(data["app"].get("icon", ""), read_file))


def _icon(reference: str, read_file) -> str:
    if not reference or reference.startswith("data:image/"):
        return reference
    suffix = PurePosixPath(reference).suffix.lower()
    if suffix not in ICON_TYPES:
        raise ManifestError([f"app.icon: use an .svg or .png file (not {reference!r})."])
    if read_file is None or ".." in PurePosixPath(reference).parts or reference.startswith("/"):
        raise ManifestError([f"app.icon: {reference!r} is not a file beside the manifest."])
    try:
        content = read_file(reference)
    except (OSError, KeyError):
        raise ManifestError([f"app.icon: there is no file {reference!r} beside the manifest."]) from None
    if len(content) > MAX_ICON_BYTES:
        raise ManifestError([f"app.icon: {reference!r} is larger than {MAX_ICON_BYTES // 1024} KB."])
    return f"data:{ICON_TYPES[suffix]};base64,{base64.b64encode(content).decode('ascii')}"


def manifest_load(path: str | Path) -> Manifest:
    """A manifest file, or a folder holding ``app.yaml``."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ManifestError([f"Cannot read {path}: {exc.strerror}."]) from None
    return manifest_parse(text, read_file=lambda name: (path.parent / name).read_bytes())


def manifest_from_upload(content: bytes) -> Manifest:
    """An uploaded manifest: YAML, or a zip holding ``app.yaml`` (at its top or in one folder)."""
    if len(content) > MAX_UPLOAD_BYTES:
        raise ManifestError([f"The upload is larger than {MAX_UPLOAD_BYTES // 1024} KB."])
    if not zipfile.is_zipfile(io.BytesIO(content)):
        return manifest_parse(content)
    try:
        return _manifest_from_zip(content)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, RuntimeError, NotImplementedError, EOFError) as exc:
        # Damaged, encrypted (RuntimeError) or compressed in a way zipfile cannot read.
        raise ManifestError([f"The zip cannot be read: {exc}."]) from None


def _manifest_from_zip(content: bytes) -> Manifest:
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        names = [name for name in archive.namelist() if PurePosixPath(name).name == MANIFEST_NAME]
        names = [name for name in names if len(PurePosixPath(name).parts) <= 2]
        if len(names) != 1:
            raise ManifestError([f"The zip must hold one {MANIFEST_NAME} (at its top, or in one folder)."])
        folder = PurePosixPath(names[0]).parent

        def read_file(name: str) -> bytes:
            info = archive.getinfo(str(folder / name) if str(folder) != "." else name)
            if info.file_size > MAX_ICON_BYTES:
                return b"x" * (MAX_ICON_BYTES + 1)  # refused by size, without inflating it
            return archive.read(info)

        info = archive.getinfo(names[0])
        if info.file_size > MAX_MANIFEST_BYTES:
            raise ManifestError([f"The manifest is larger than {MAX_MANIFEST_BYTES // 1024} KB."])
        return manifest_parse(archive.read(info), read_file=read_file)
