"""Waking whoever waits for a run (flows_app/notify.py), on the machine's Redis."""

import redis
from django.conf import settings as django_settings

from flows_app import notify
from tests.conftest import require_service


def test_installations_sharing_a_redis_server_do_not_wake_each_others_waiters(settings):
    require_service("Redis", "127.0.0.1", 6379)
    client = redis.Redis.from_url(django_settings.FLOWGATE_REDIS_URL)
    waiter = client.pubsub(ignore_subscribe_messages=True)
    waiter.subscribe(notify.channel(7), "sentinel")  # a waiter of this installation, run 7
    try:
        settings.SECRET_KEY = "another-installation-" + "k" * 40  # its run 7, on the same server
        notify.publish(7)
        client.publish("sentinel", b"after")  # pub/sub keeps order: anything that reached us came first
        received = []
        for message in waiter.listen():
            received.append(message)
            if message["channel"] == b"sentinel":
                break
        assert [message["channel"] for message in received] == [b"sentinel"]
    finally:
        waiter.close()
        client.close()
