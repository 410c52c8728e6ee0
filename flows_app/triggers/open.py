"""open: anyone may call. Chosen explicitly, and shown as such in the admin."""

from flows_app.triggers.base import Caller, EndpointAuth


class OpenAccess(EndpointAuth):
    slug = "open"
    label = "Open access (no authentication)"
    description = "Anyone who knows the URL can start the flow."

    def authenticate(self, request, *, config, secret):
        return Caller(mode=self.slug)
