"""A request's image bytes, once the caller may have them (edgecache.authorization.decision):
where they come from (source) and how they go out (send; relay for bytes straight from the
region). The client handler and the zone's sibling endpoint both go this way."""
