"""Settings: each declared once (edgecache/config/sections/), with its section, key, kind,
bounds, default, help and `serve` flag; loading and checking them (loading, checks), the `serve`
flags (edgecache/cli/serve.py) and the example file (example) all follow from the declarations.

To add a setting: a field in its section's module, its help the docstring under it, then
`python -m edgecache.config.example > config/edgecache.toml` (a test compares the two).
"""

from edgecache.config.catalog import TOML_KEYS
from edgecache.config.errors import ConfigError
from edgecache.config.loading import load_settings, resolve_config_path
from edgecache.config.sections.keystone import ServiceCredentials
from edgecache.config.settings import Settings
from edgecache.config.sizes import parse_size

__all__ = [
    "TOML_KEYS",
    "ConfigError",
    "ServiceCredentials",
    "Settings",
    "load_settings",
    "parse_size",
    "resolve_config_path",
]
