"""OAuth2 as a client: PKCE, the protocol through requests-oauthlib, token life cycle.

pkce.py        RFC 7636 code verifier and S256 challenge
client.py      OAuth2Config, TokenResult and OAuth2Hooks: build the authorization
               URL, exchange a code, refresh, fetch with client credentials, revoke
quirks/        OAuth2Hooks subclasses for providers that do not follow the standard
providers.py   presets from providers.yaml (checked against a JSON schema)
discovery.py   endpoints from an issuer's metadata (OpenID Connect, RFC 8414)
identity.py    who the connected account is (userinfo, an ID token, an identity URL)
tokens.py      stored tokens: fresh access tokens, single-flight refresh, failures
"""
