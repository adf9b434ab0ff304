"""Gunicorn entry point for Keystone (runs inside the stack venv).

Keystone's WSGI factory parses ``sys.argv`` with oslo.config, so gunicorn's own command
line makes it exit with "unrecognized arguments"; hide it before initialising.
"""

import sys

from keystone.server import wsgi

sys.argv = sys.argv[:1]
application = wsgi.initialize_public_application()
