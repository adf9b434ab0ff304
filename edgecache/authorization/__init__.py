"""Who may have what: Glance decides, edgecache remembers, Keystone says who is asking.

- `identity`: a caller's token and identity, known only by keyed hashes;
- `authority`: Glance's decisions about an identity and an image (see the record, download the
  data), learnt from its answers and used while the uplink is down;
- `decisions`: where those decisions, identities and tokens are kept (the index database);
- `recall`: Glance's answers to metadata requests and its download decision, fetched with the
  caller's credentials and recalled while the uplink is down;
- `keystone`: token validation (an edge-site Keystone where there is one) and the service token;
- `revalidate`: when the uplink comes back, take away what Glance took away meanwhile;
- `bootdocs`: the documents every client reads before a boot, kept ahead of need.
"""
