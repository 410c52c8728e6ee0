"""The vault's business logic, as plain keyword-only functions named <entity>_<action>.

Views, admin actions, management commands and Celery tasks call these and nothing else
that changes state. Functions that change a secret take ``acting_user``, run in one
transaction and write an ``AuditEvent``.
"""
