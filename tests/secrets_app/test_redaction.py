"""A redactor masks the secret values it knows, and can learn them back from stored data."""

from secrets_app.redaction import MASK, Redactor

PASSWORD = "partner-password-8080"


def test_values_are_masked_in_text_and_data_also_base64_encoded():
    redactor = Redactor([PASSWORD, "ab"])
    assert redactor.text(f"pw={PASSWORD}") == f"pw={MASK}"
    assert redactor.data({"ab": ["x ab", "cGFydG5lci1wYXNzd29yZC04MDgw"]}) == {"ab": ["x ab", MASK]}  # too short to mask


def test_learning_from_a_stored_pair_masks_the_same_values_again():
    raw = {"auth": f"Bearer {PASSWORD}", "items": [{"echo": f"{PASSWORD}/{PASSWORD}"}, "plain"]}
    redacted = Redactor([PASSWORD]).data(raw)
    learned = Redactor()
    learned.learn(raw, redacted)
    assert learned.data(raw) == redacted
    assert learned.text(f"later: {PASSWORD}") == f"later: {MASK}"


def test_learning_ignores_pairs_that_do_not_line_up():
    learned = Redactor()
    learned.learn({"a": "one value"}, {"a": f"other {MASK}"})
    learned.learn(["x"], {"x": MASK})
    assert not learned
