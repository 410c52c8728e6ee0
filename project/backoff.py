"""One backoff rule for the whole product: exponential, capped, jittered, and honouring a
server's ``Retry-After``.

Attempt 1 waits about ``base`` seconds and each next attempt twice as long, never more
than ``cap``. The delay is drawn from half to all of that ("equal jitter"): never much
shorter than planned, yet callers that failed together come back apart. A server's
``Retry-After`` is honoured up to ``cap``, plus up to 10 %, so that callers told the same
second do not all return in it. Polling loops use the same rule with a small base.
"""

import random


def retry_delay(attempt: int, *, base: float, cap: float, retry_after: float | None = None) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
    if retry_after is not None:
        return min(retry_after, cap) * (1 + random.random() * 0.1)
    return min(base * 2 ** (attempt - 1), cap) * (0.5 + random.random() / 2)
