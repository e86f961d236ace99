"""Key names and Lua scripts of the Redis backend.

Every change to shared state is one script, so it is atomic: a publish takes
its seq (INCR), is retained (XADD with the seq as the stream id, trimmed to
``history_size``) and is announced on the bus (PUBLISH) in one step, which is
what gives every process the same per-topic order.  All scripts touch one
Redis; Redis Cluster is not supported (the keys of a topic and the topic
table would live in different slots).

Each script announces what it did on the bus through the helpers of
``bus.LUA`` (the bus message format lives there only).
"""

from __future__ import annotations

from hiredis import pack_command

from tornado_pubsub.backends.redis.bus import LUA as _BUS


class Keys:
    """Every key name, under one prefix."""

    def __init__(self, prefix: str = "pubsub:") -> None:
        self.prefix = prefix
        self.topics = prefix + "topics"  # hash: topic -> epoch
        self.nodes = prefix + "nodes"  # zset: node id -> expiry (unix seconds)
        self.bus = prefix + "bus"  # the pub/sub channel

    def topic(self, name: str) -> list[str]:
        """``[seq counter, history stream, retained message ids]`` of a topic;
        the ids are a sorted set scored by -seq: a small one is a listpack,
        where the newest then goes in first instead of after every other."""
        p = self.prefix
        return [f"{p}seq:{name}", f"{p}log:{name}", f"{p}idz:{name}"]

    def legacy_ids(self, name: str) -> str:
        """The id -> seq hash versions before 2026-12-04 kept instead of the
        sorted set: deleted with the topic, never read."""
        return f"{self.prefix}ids:{name}"

    def node(self, node_id: str) -> str:
        """The hash of one process's figures: ``s:<topic>`` subscribers, ``d:<topic>`` drops."""
        return f"{self.prefix}node:{node_id}"


# KEYS: topics, seq, log, ids, legacy ids.  ARGV: name, epoch, max_topics, bus.
# Returns 1 created, 0 exists, -1 topic limit reached.
CREATE = _BUS + """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
local limit = tonumber(ARGV[3])
if limit > 0 and redis.call('HLEN', KEYS[1]) >= limit then return -1 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
bus_created(ARGV[4], ARGV[1], ARGV[2])
return 1
"""

# KEYS: topics, seq, log, ids, legacy ids.  ARGV: name, bus.  Returns the deleted epoch or nil.
DELETE = _BUS + """
local epoch = redis.call('HGET', KEYS[1], ARGV[1])
if not epoch then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
bus_deleted(ARGV[2], ARGV[1], epoch)
return epoch
"""

# KEYS: topics, seq, log, ids.  ARGV: name, id key (lower-case id), head
# (the event frame up to its seq, bus.encode_head), history_size, bus.
# Returns nil (no topic) or {epoch, seq, duplicate 0/1}.
# A message id still in the history is not published again (idempotency
# lasts as long as the message is retained, as in memory).  The stream and
# the ids keep the newest ``history_size`` entries each, trimmed by the
# commands that add to them: a script's cost is mostly its redis.call()s,
# and reading back what a trim evicts, to forget its ids one by one, took
# four of them per publish (bench/README.md, step 17).
PUBLISH = _BUS + """
local epoch = redis.call('HGET', KEYS[1], ARGV[1])
if not epoch then return false end
local size = tonumber(ARGV[4])
if size > 0 then
  local earlier = redis.call('ZSCORE', KEYS[4], ARGV[2])
  if earlier then return {epoch, -tonumber(earlier), 1} end
end
local seq = redis.call('INCR', KEYS[2])
if size > 0 then
  redis.call('XADD', KEYS[3], 'MAXLEN', size, '0-' .. seq, 'h', ARGV[3], 'i', ARGV[2])
  redis.call('ZADD', KEYS[4], -seq, ARGV[2])
  redis.call('ZREMRANGEBYRANK', KEYS[4], size, -1)
end
bus_event(ARGV[5], ARGV[1], epoch, seq, ARGV[3], ARGV[2])
return {epoch, seq, 0}
"""

class PublishPacking:
    """``EVALSHA`` of ``PUBLISH`` as RESP bytes, ready to send.

    All but the message id and head are the same for every publish to a
    topic, so they are packed once per topic (by hiredis's
    ``pack_command``, which defines the format) and a publish joins them
    with its two own arguments: 0.6 against 2.4-3.4 us a publish.
    ``pack(...) == pack_command(("EVALSHA", sha, 4, *keys.topic-keys,
    name, id_key, head, history_size, bus))`` (tests/core/test_redis_packing.py).
    Topic names are client input: at most ``MAX_TOPICS`` are kept, and the
    cache starts over when full.
    """

    MAX_TOPICS = 4096

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self._ends: dict[tuple[str, str, int], tuple[bytes, bytes]] = {}

    def pack(self, sha: str, name: str, history_size: int, id_key: str, head: bytes) -> bytes:
        ends = self._ends.get((sha, name, history_size))
        if ends is None:
            ends = self._pack_ends(sha, name, history_size)
        start, end = ends
        id_bytes = id_key.encode()
        return b"%b$%d\r\n%b\r\n$%d\r\n%b\r\n%b" % (start, len(id_bytes), id_bytes, len(head), head, end)

    def _pack_ends(self, sha: str, name: str, history_size: int) -> tuple[bytes, bytes]:
        keys = [self.keys.topics, *self.keys.topic(name)]
        start = pack_command(("EVALSHA", sha, len(keys), *keys, name))
        end = pack_command((history_size, self.keys.bus))
        # Both are "*<count>\r\n" then the arguments: one header for all 12.
        count = 3 + len(keys) + 5
        ends = (b"*%d\r\n" % count + start[start.index(b"\r\n") + 2 :], end[end.index(b"\r\n") + 2 :])
        if len(self._ends) >= self.MAX_TOPICS:
            self._ends.clear()
        self._ends[(sha, name, history_size)] = ends
        return ends


# KEYS: topics, seq, log.  ARGV: name, mode, n, epoch the client saw ('' if none).
# mode 'after': retained entries with seq > n (all of them when n belongs to
# another incarnation); 'last': the newest n, newest first; 'none': no entries.
# Returns nil (no topic) or {epoch, last_seq, oldest retained seq (0: none), entries}.
SNAPSHOT = """
local epoch = redis.call('HGET', KEYS[1], ARGV[1])
if not epoch then return false end
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local oldest = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)
local first = 0
if oldest[1] then first = tonumber(string.match(oldest[1][1], '%-(%d+)$')) end
local n = tonumber(ARGV[3])
local entries = {}
if ARGV[2] == 'after' then
  if (ARGV[4] ~= '' and ARGV[4] ~= epoch) or n > last then n = 0 end
  entries = redis.call('XRANGE', KEYS[3], '0-' .. (n + 1), '+')
elseif ARGV[2] == 'last' and n > 0 then
  entries = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', n)
end
return {epoch, last, first, entries}
"""

# KEYS: topics, log.  ARGV: name, epoch, after, upto, max_bytes, count.
# One page of a replay (core.outbound.Replay): retained entries with
# after < seq <= upto, at most ``count`` and ``max_bytes`` of heads or bodies (at least
# one), oldest first.  Returns nil when the incarnation is gone, else
# {oldest retained seq (0: none), entries}.
PAGE = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return false end
local entries = redis.call('XRANGE', KEYS[2], '0-' .. (tonumber(ARGV[3]) + 1), '0-' .. ARGV[4], 'COUNT', tonumber(ARGV[6]))
local out = {}
local size = 0
local limit = tonumber(ARGV[5])
for i, entry in ipairs(entries) do
  local n = string.len(entry[2][2])
  if i > 1 and size + n > limit then break end
  size = size + n
  out[i] = entry
end
local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local first = 0
if oldest[1] then first = tonumber(string.match(oldest[1][1], '%-(%d+)$')) end
return {first, out}
"""

# KEYS: topics, seq.  ARGV: name, epoch, last_seq.
# After Redis lost its data (a restart without persistence), the processes
# put back the topics they knew, with their epoch and a seq counter that
# never goes backwards.  Returns 1 if the topic was missing.
RESTORE = """
local created = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[3]) then
    redis.call('SET', KEYS[2], ARGV[3])
  end
end
return created
"""
