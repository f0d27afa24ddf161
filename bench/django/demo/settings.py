"""The Django app's demo project (demo/demo/settings.py of django-xmpp-http-upload 1.0.0), as
benchmarked by bench/run.sh: the same apps, middleware and access rules, adapted to Django 3.2
(SessionAuthenticationMiddleware no longer exists). Changes that favour Django: DEBUG off, no
access log, uploads and their temporary files on tmpfs like everybody else's. Paths come from the environment so the database lives where bench/run.sh says."""

import os
from datetime import timedelta

BASE_DIR = os.environ.get("XHU_BENCH_DJANGO_DIR", "/tmp/xhu-bench/django")

SECRET_KEY = "benchmark-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]

# Uploaded files on the same file system as the other contestants' (bench/run.sh: tmpfs).
MEDIA_ROOT = os.environ.get("XHU_BENCH_DJANGO_MEDIA", os.path.join(BASE_DIR, "media"))
FILE_UPLOAD_TEMP_DIR = os.environ.get("XHU_BENCH_DJANGO_TMP")
MEDIA_URL = "/media/"

INSTALLED_APPS = (
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "xmpp_http_upload",
)

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.security.SecurityMiddleware",
]

ROOT_URLCONF = "demo.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.debug",
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "demo.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(BASE_DIR, "db.sqlite3"),
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_L10N = True
USE_TZ = True
STATIC_URL = "/static/"

# The demo's rules: admin@example.com has no limits (the JID bench/run.sh uses).
XMPP_HTTP_UPLOAD_ACCESS = (
    ("^admin@example\\.com$", {"http_upload": {}}),
    ("^blocked@jabber.at$", False),
    (
        ["@example\\.net$", "@example\\.org$"],
        {
            "max_file_size": 512 * 1024,
            "max_total_size": 3 * 1025 * 1024,
            "bytes_per_timedelta": {"delta": timedelta(hours=1), "bytes": 1024 * 1024},
            "uploads_per_timedelta": {"delta": timedelta(hours=1), "uploads": 3},
        },
    ),
    (".*", False),
)
