"""edgecache: a verified, offline-capable read-through cache for OpenStack Glance."""

__version__ = "0.1.0"
