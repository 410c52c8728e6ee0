"""The embedded broker (project/broker.py): a shared folder, one writer, many readers."""

import hashlib
import multiprocessing
import os
import threading

from kombu import Connection

TRANSPORT = "project.broker:Transport"
MESSAGES = 60
READERS = 6


def connection(folder) -> Connection:
    """Each test uses its own queue name: kombu remembers the queues a process declared."""
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder), "control_folder": str(folder / "control"), "polling_interval": 0.001}
    return Connection("filesystem://", transport=TRANSPORT, transport_options=options)


def message(n: int) -> dict:
    pad = os.urandom(256 * 1024).hex()  # half a megabyte: a write a reader can overtake
    return {"n": n, "pad": pad, "digest": hashlib.sha256(pad.encode()).hexdigest()}


def read_all(folder, results, failures) -> None:
    """Read until the 'stop' message; record every message and every error."""
    with connection(folder) as conn:
        queue = conn.SimpleQueue("runs")
        while True:
            try:
                received = queue.get(timeout=60)
            except queue.Empty:
                failures.append("no message for a minute")
                return
            except Exception as exc:  # noqa: BLE001  (a partial message surfaces here)
                failures.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            received.ack()
            body = received.payload
            if body == "stop":
                return
            if hashlib.sha256(body["pad"].encode()).hexdigest() != body["digest"]:
                failures.append(f"message {body['n']} arrived damaged")
            results.append(body["n"])


def write_all(folder) -> None:
    with connection(folder) as conn:
        queue = conn.SimpleQueue("runs")
        for n in range(MESSAGES):
            queue.put(message(n))
        for _ in range(READERS):
            queue.put("stop")


def test_readers_in_threads_and_processes_never_see_a_partial_message(tmp_path):
    manager = multiprocessing.get_context("fork").Manager()
    results, failures = manager.list(), manager.list()
    processes = [
        multiprocessing.get_context("fork").Process(target=read_all, args=(tmp_path, results, failures))
        for _ in range(READERS // 2)
    ]
    threads = [threading.Thread(target=read_all, args=(tmp_path, results, failures)) for _ in range(READERS // 2)]
    for reader in (*processes, *threads):
        reader.start()
    write_all(tmp_path)
    for reader in (*processes, *threads):
        reader.join()
    assert list(failures) == []
    assert sorted(results) == list(range(MESSAGES))  # each message once, none lost


def test_a_corrupt_or_unreadable_file_is_skipped_and_the_next_message_read(tmp_path):
    (tmp_path / "0_a.jobs.msg").write_text('{"body": "half a mess')
    (tmp_path / "0_b.jobs.msg").write_bytes(b"\xff\xfe not text")
    with connection(tmp_path) as conn:
        queue = conn.SimpleQueue("jobs")
        queue.put({"n": 1})
        received = queue.get(timeout=10)
        assert received.payload == {"n": 1}
        received.ack()
    assert [name for name in os.listdir(tmp_path) if name.endswith(".msg")] == []
