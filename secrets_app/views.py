"""HTTP views of the vault: the published JWKS (and, with OAuth2, the redirect endpoints)."""

from django.http import JsonResponse
from django.views.decorators.http import require_GET

from secrets_app.selectors import published_jwks


@require_GET
def jwks(request):
    response = JsonResponse(published_jwks())
    response["Cache-Control"] = "public, max-age=300"
    return response
