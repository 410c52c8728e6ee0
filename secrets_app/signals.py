"""Signals other parts of the product (a notification, a flow) can hang on.

Both are sent after the change is committed, with ``sender=Secret`` and ``secret``.
"""

from django.dispatch import Signal

#: The provider refused the grant (``invalid_grant`` and the like): a person must reconnect.
#: Extra argument: ``reason``, a short text without values.
oauth2_connection_needs_reauthorization = Signal()

#: A connection that had failed works again (a refresh succeeded, or it was reconnected).
oauth2_connection_recovered = Signal()

#: A refresh token expires soon (``OAuth2Connection.reconnect_by`` is within
#: ``FLOWGATE_OAUTH2_RECONNECT_NOTICE_DAYS``): sent once per connection and date.
#: Extra argument: ``reconnect_by``, the datetime.
oauth2_connection_expiring = Signal()
