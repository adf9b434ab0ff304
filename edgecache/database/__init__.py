"""The cache index's sqlite database, shared by the tables of several owners (the blob index,
the remembered documents, Glance's remembered decisions), each with its versioned schema."""
