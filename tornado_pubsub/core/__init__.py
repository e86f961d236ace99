"""The protocol core: no sockets, no HTTP.

``errors`` (protocol codes and close codes), ``frames`` (rendering),
``schemas`` (parsing and validation), ``history`` (a topic's retained
events), ``outbound`` (a connection's bounded queue), ``hub`` (connections,
local subscriptions and fan-out), ``ratelimit`` and ``auth``.  Transports
(``tornado_pubsub.handlers``) and backends (``tornado_pubsub.backends``)
build on it; it imports neither.
"""
