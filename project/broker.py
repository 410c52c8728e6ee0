"""The embedded broker: kombu's file-system transport with atomic messages.

kombu's own ``filesystem`` transport writes a message straight into the queue folder, so a
reader can take the file before its writer has finished (kombu issue 1551): the worker
then parses half a message and dies with ``JSONDecodeError``. Here a message is written
under a name readers do not match and renamed into the queue only once complete, and a
reader takes a file by renaming it to a name of its own (one reader wins; the others move
on). A file that still cannot be read or parsed is logged and dropped instead of ending
the worker: the engine's recovery job re-sends a run whose message was lost.

Selected in ``project/settings.py`` (``CELERY_BROKER_TRANSPORT``) for ``filesystem://``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import uuid
from queue import Empty
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.json import dumps, loads

logger = logging.getLogger(__name__)

#: Names that kombu's readers (``<stamp>_<uuid>.<queue>.msg``) never take: a leading dot.
_WRITING = ".writing-{}"
_TAKEN = ".taken-{}"


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        folder = self.data_folder_out
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        partial = os.path.join(folder, _WRITING.format(uuid.uuid4().hex))
        try:
            with open(partial, "wb") as file:
                file.write(dumps(payload).encode())
            os.rename(partial, os.path.join(folder, name))  # atomic: readers see all of it or nothing
        except OSError as exc:
            try:
                os.unlink(partial)
            except OSError:
                pass
            raise ChannelError(f"Cannot add a message to {folder!r}") from exc

    def _get(self, queue):
        folder = self.data_folder_in
        wanted = f"{queue}.msg"
        for name in sorted(os.listdir(folder)):
            if name.partition(".")[2] != wanted:
                continue
            taken = os.path.join(folder, _TAKEN.format(uuid.uuid4().hex))
            try:
                os.rename(os.path.join(folder, name), taken)
            except OSError:
                continue  # another reader took it
            payload = self._read_taken(taken, name)
            if payload is not None:
                return payload
        raise Empty()

    @staticmethod
    def _read_taken(path: str, name: str):
        """The message in a file this reader took, or None (logged) when it is unusable."""
        try:
            with open(path, "rb") as file:
                # A writer of kombu's own transport (an older process during an upgrade)
                # holds this lock while it writes into the queue folder: wait for it.
                fcntl.flock(file.fileno(), fcntl.LOCK_SH)
                data = file.read()
            return loads(data.decode())
        except (OSError, ValueError) as exc:  # ValueError: not UTF-8, not JSON
            logger.error("Dropped unreadable broker message %s: %s", name, exc)
            return None
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass


class Transport(filesystem.Transport):
    Channel = Channel
