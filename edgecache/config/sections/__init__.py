"""The sections of the settings file, in the order the example file shows them. Each module
here declares one section: its settings, as fields of a part of Settings."""

from edgecache.config.sections.auth import AUTH
from edgecache.config.sections.cache import CACHE
from edgecache.config.sections.keystone import KEYSTONE
from edgecache.config.sections.offline import OFFLINE
from edgecache.config.sections.prefetch import PREFETCH
from edgecache.config.sections.server import SERVER
from edgecache.config.sections.upstream import UPSTREAM
from edgecache.config.sections.zone import ZONE

SECTIONS = (UPSTREAM, SERVER, OFFLINE, AUTH, KEYSTONE, CACHE, ZONE, PREFETCH)
