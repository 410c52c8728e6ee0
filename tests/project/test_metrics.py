"""/metrics: off without a token, closed to a wrong one, and the broker's queue depths."""

import uuid

from django.conf import settings as django_settings

from project.celery import app as celery_app


class TestAccess:
    def test_metrics_are_not_found_until_a_token_is_set(self, client, settings):
        settings.FLOWGATE_METRICS_TOKEN = ""
        assert client.get("/metrics").status_code == 404
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 404
        settings.FLOWGATE_METRICS_TOKEN = "the-right-token"
        response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer the-right-token")
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/plain; version=0.0.4")

    def test_a_wrong_or_missing_token_is_refused(self, client, settings):
        settings.FLOWGATE_METRICS_TOKEN = "the-right-token"
        for header in ["Bearer the-wrong-token", "Bearer the-right-token-and-more", "Basic the-right-token", ""]:
            response = client.get("/metrics", HTTP_AUTHORIZATION=header)
            assert response.status_code == 401, header
            assert response["WWW-Authenticate"].startswith("Bearer")
            assert b"the-right-token" not in response.content


class TestQueueDepth:
    def test_the_session_queue_reports_a_number(self, scrape):
        queue = django_settings.CELERY_TASK_DEFAULT_QUEUE
        depths = [s for s in scrape().samples if s.name == "flowgate_queue_depth" and s.labels == {"queue": queue}]
        assert len(depths) == 1 and depths[0].value >= 0

    def test_messages_waiting_in_a_queue_are_counted(self, scrape):
        queue = f"metrics-test-{uuid.uuid4().hex}"
        celery_app.amqp.queues.add(queue)  # as an entry in task_queues would
        try:
            with celery_app.connection_for_write() as connection, connection.SimpleQueue(queue) as waiting:
                for number in range(3):
                    waiting.put({"n": number})
                assert scrape().value("flowgate_queue_depth", queue=queue) == 3
                waiting.get(timeout=5).ack()
                assert scrape().value("flowgate_queue_depth", queue=queue) == 2
                waiting.clear()
                assert scrape().value("flowgate_queue_depth", queue=queue) == 0
        finally:
            celery_app.amqp.queues.pop(queue)

    def test_an_unreachable_broker_leaves_out_queue_depth(self, monkeypatch):
        from celery import Celery

        from project.metrics_broker import QueueDepthCollector

        monkeypatch.delenv("CELERY_BROKER_URL")  # Celery prefers it to the broker given below
        unreachable = Celery("unreachable", broker="redis://127.0.0.1:9/0")  # the discard port: nothing listens
        assert list(QueueDepthCollector(unreachable).collect()) == []
