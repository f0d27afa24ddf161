"""The demo project's URLs: the app under /http_upload/."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("http_upload/", include("xmpp_http_upload.urls")),
]
