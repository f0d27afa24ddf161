#!/bin/bash
# Creates the virtualenv for the Django baseline: django-xmpp-http-upload 1.0.0 with Django 3.2.x
# (the app's URLs use django.conf.urls.url, gone in Django 4), djangorestframework 3.14.0 and
# gunicorn. Usage: bench/django/setup.sh VENV_DIR
set -euo pipefail
venv=${1:?usage: setup.sh VENV_DIR}
if [ ! -x "$venv/bin/gunicorn" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'django-xmpp-http-upload==1.0.0' 'Django>=3.2,<3.3' \
        'djangorestframework==3.14.0' gunicorn
fi
