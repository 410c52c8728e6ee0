"""Hooks for providers that do not follow RFC 6749. One module per provider quirk.

A quirk is a subclass of ``secrets_app.oauth2.client.OAuth2Hooks`` overriding as little
as it can (usually ``token_response`` or ``token_result``). Presets in providers.yaml
name them; an OAuth2 secret may name one in its ``hooks`` field.
"""
