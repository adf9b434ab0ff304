"""The upstream client: the region's Glance reached over bounded pools (pools), whether it is
reachable (uplink), its failures put into words (failures, certificates), and the low-delay
mark on the sockets that carry bytes a caller waits for (lowdelay)."""
