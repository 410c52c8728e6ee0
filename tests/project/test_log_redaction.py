import logging

from project.log_redaction import RedactingFilter, redact_text


def test_known_secret_shapes_are_masked():
    assert redact_text("Authorization: Bearer abc.def.ghi") == "Authorization: Bearer [redacted]"
    assert redact_text("grant_type=refresh_token&refresh_token=rt-123&client_secret=cs") == (
        "grant_type=refresh_token&refresh_token=[redacted]&client_secret=[redacted]"
    )
    assert (
        redact_text('{"access_token": "at-1", "expires_in": 3600}')
        == '{"access_token": "[redacted]", "expires_in": 3600}'
    )
    assert redact_text("postgres://app:hunter2@db/app") == "postgres://app:[redacted]@db/app"


def test_the_filter_masks_arguments_and_tracebacks():
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "sent %s", ("access_token=at-1",), None)
    try:
        raise ValueError("refresh_token=rt-2")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    RedactingFilter().filter(record)
    assert record.getMessage() == "sent access_token=[redacted]"
    assert "rt-2" not in record.exc_text
