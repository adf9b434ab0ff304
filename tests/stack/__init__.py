"""A real Keystone + Glance on loopback for integration tests and demos.

Standard library only: OpenStack itself lives in a separate, cached venv
(:func:`ensure_stack_venv`) and runs as subprocesses. See ``python -m tests.stack --help``.
"""

from .errors import StackError
from .install import REQUIREMENTS, default_cache_root, ensure_stack_venv
from .openstack import Credentials, OpenStackStack, Token, Visibility, get_token

__all__ = [
    "REQUIREMENTS",
    "Credentials",
    "OpenStackStack",
    "StackError",
    "Token",
    "Visibility",
    "default_cache_root",
    "ensure_stack_venv",
    "get_token",
]
