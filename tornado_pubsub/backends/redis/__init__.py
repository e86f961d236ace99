"""The Redis backend: ``broker`` (the backend itself), ``scripts`` (the Lua
scripts and key layout) and ``figures`` (this process's share of the
cluster-wide counts).  Imported only with ``--broker=redis``."""
