"""The nodes of one edge zone as sources of each other's image bytes (issue 16).

A node that misses an image asks its siblings (`[zone] peers`) before the region, over an
internal endpoint that answers only from a stored copy or a fill in progress; the image then
crosses the WAN once per zone, however HAProxy spreads a boot storm over the nodes.
"""
