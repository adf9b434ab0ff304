"""The on-disk cache: index (sqlite), blob files, single-flight fills, eviction."""
