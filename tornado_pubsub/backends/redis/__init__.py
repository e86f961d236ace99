"""The Redis backend, split by job: ``backend`` (``RedisBackend``, which
ties the others together behind ``backends.base.Backend``), ``bus`` (the pub/sub
reader, its message protocol and per-topic progress), ``store`` (every Redis
command, faults turned into ``PubSubError``), ``scripts`` (the Lua scripts and
key layout) and ``figures`` (this process's share of the cluster-wide
counts).  Imported only with ``--broker=redis``."""
