"""The product's URLs plus ``/bench/bare``: a Django view that answers 200 and does nothing,
behind the same middleware, as the baseline a request to Flowgate is compared with."""

from django.http import JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from project.urls import urlpatterns as product


@csrf_exempt
def bare(request):
    return JsonResponse({"ok": True})


urlpatterns = [path("bench/bare", bare), *product]
