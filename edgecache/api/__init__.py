"""The Glance-facing HTTP handlers and the daemon's own endpoints."""
