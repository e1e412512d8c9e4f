import re

from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.urls import include, path, re_path
from django.views.decorators.cache import never_cache
from django.views.static import serve


@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    """For container health checks and Kubernetes probes: the process answers and reaches its
    database (an error here is a 500). Exempt from the HTTPS redirect (SECURE_REDIRECT_EXEMPT)."""
    connection.ensure_connection()
    return HttpResponse("ok\n", content_type="text/plain")


urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("similarity/", include("similarity.urls")),  # the widgets' analytics beacon
    path("", include("catalog.urls")),
]
if settings.DEBUG:
    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
elif settings.SERVE_MEDIA:
    # DJANGO_SERVE_MEDIA=1: uploads served by Django itself, for a small deployment without a
    # proxy or object storage in front (docs/deploy.md). Each file ties up a gunicorn thread.
    urlpatterns += [
        re_path(rf"^{re.escape(settings.MEDIA_URL.lstrip('/'))}(?P<path>.*)$", serve,
                {"document_root": settings.MEDIA_ROOT}),
    ]
