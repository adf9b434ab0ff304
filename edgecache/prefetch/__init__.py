"""Prefetch jobs: images queued to be cached (`glance cache-queue`, `edgecache warm --queue`),
kept in the index database so that they survive a restart, started in `[prefetch] window`."""
