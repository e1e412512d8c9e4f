"""The app's own URLs (``path("similarity/", include("similarity.urls"))``): the widget beacon."""

from django.urls import path

from .behaviour.views import beacon

app_name = "similarity"
urlpatterns = [
    path("beacon", beacon, name="beacon"),
]
