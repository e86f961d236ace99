"""The outbound queue without sockets: batches are bounded, replays are read
as positions, and overflow costs the same whatever is parked ahead."""

from __future__ import annotations

import asyncio

import pytest

from tornado_pubsub.core.history import Event, EventList, History
from tornado_pubsub.core.inline import spawn
from tornado_pubsub.core.outbound import HOLE, WRITE_MAX, OutboundQueue, Replay


def event(seq: int, size: int = 100) -> Event:
    return Event(seq, f"m{seq}", b"e" * size, None)


def queue(maxsize: int = 5, max_bytes: int = 1 << 20, drops: list | None = None) -> OutboundQueue:
    return OutboundQueue(maxsize, max_bytes, True, (drops if drops is not None else []).append)


def frame_bytes(batch) -> int:
    return sum(len(i) if isinstance(i, bytes) else len(i.data) for i in batch)


def test_take_never_joins_more_than_one_write_of_a_replay():
    history = History(100, 64 << 20)
    for seq in range(1, 101):
        history.append(event(seq, 60_000))
    q = queue()
    q.offer_replay(Replay("t", "e", history, 0, 100))
    q.offer(b'{"after":"replay"}')
    seqs: list[int] = []
    writes = 0
    while not q.idle():
        batch = q.take(q.get_nowait())
        assert frame_bytes(batch) <= WRITE_MAX
        seqs += [i.seq for i in batch if isinstance(i, Event)]
        writes += 1
        q.sent()
    assert seqs == list(range(1, 101)) and writes >= 100 * 60_000 // WRITE_MAX


def test_a_frame_larger_than_one_write_goes_out_alone():
    q = queue()
    q.offer_replay(Replay("t", "e", EventList([event(1, WRITE_MAX + 1), event(2)]), 0, 2))
    assert [i.seq for i in q.take(q.get_nowait())] == [1]
    q.sent()
    assert [i.seq for i in q.take(q.get_nowait())] == [2]


class CountingList(list):
    """A list that counts how many of its items were looked at."""

    touched = 0

    def __getitem__(self, index):
        CountingList.touched += 1
        return super().__getitem__(index)

    def __iter__(self):
        for item in super().__iter__():
            CountingList.touched += 1
            yield item


def test_overflow_work_per_event_does_not_grow_with_what_is_parked_ahead():
    # Finding 5: thousands of parked replays and control frames at the head
    # made every dropped event walk past them.
    source = EventList([event(1)])
    q = queue(maxsize=1000, drops=(drops := []))
    for _ in range(5000):
        q.offer_replay(Replay("t", "e", source, 0, 1))
    for n in range(500):
        q.offer(b"ctl%d" % n)
    q._queue = CountingList(q._queue)
    for seq in range(1, 2001):
        assert q.offer(event(seq))
        if isinstance(q._queue, list) and not isinstance(q._queue, CountingList):
            q._queue = CountingList(q._queue)  # a compaction made a new list
    # 2000 events through a queue with room for 500 of them: 1500 dropped, oldest first.
    assert [e.seq for e in drops] == list(range(1, 1501))
    assert CountingList.touched < 20 * 2000, CountingList.touched  # the old walk: > 5000 per drop
    live = [i.seq for i in q.drain_nowait(replays=False) if isinstance(i, Event)]
    assert live == list(range(1501, 2001))


def test_holes_are_compacted_and_never_reach_the_writer():
    q = queue(maxsize=3)
    q.offer(b"ack")
    for seq in range(1, 200):
        q.offer(event(seq))
    assert q.holes <= max(32, len(q._queue) // 2)
    items = []
    while not q.idle():
        items += q.take(q.get_nowait())
        q.sent()
    assert HOLE not in items
    assert items[0] == b"ack" and [i.seq for i in items[1:]] == [198, 199]


async def test_each_waiting_writer_is_woken_once_and_all_run_in_one_loop_pass():
    queues = [queue() for _ in range(3)]
    batches: list[tuple[int, list]] = []

    async def writer(n: int, q: OutboundQueue) -> None:
        while True:
            first = await q.next_item()
            batches.append((n, q.take(first)))
            q.sent()

    writers = [spawn(writer(n, q)) for n, q in enumerate(queues)]
    assert all(q.writer is None for q in queues)  # spawned: they start on the next pass
    await asyncio.sleep(0)
    assert all(q.writer is not None for q in queues)  # each waits for its queue
    for q in queues:
        q.offer(b"a")
        q.offer(b"b")  # queued behind "a": the writer, woken once, takes both
    assert all(q.writer is None and q.qsize() == 2 for q in queues)
    await asyncio.sleep(0)  # one pass runs every writer woken before it
    assert batches == [(0, [b"a", b"b"]), (1, [b"a", b"b"]), (2, [b"a", b"b"])]
    assert all(q.writer is not None and q.idle() for q in queues)
    for w in writers:
        w.cancel()


async def test_a_cancelled_writer_is_forgotten_and_a_plain_get_is_still_served():
    q = queue()
    taken: list = []

    async def writer() -> None:
        try:
            taken.append(await q.next_item())
        finally:
            taken.append("closed")

    w = spawn(writer())
    await asyncio.sleep(0)
    assert q.writer is not None
    assert w.cancel()
    assert q.writer is None and taken == ["closed"]  # closed where it waited
    q.offer(b"kept")  # nobody to wake: it stays queued, counted
    await asyncio.sleep(0)
    assert taken == ["closed"] and (q.qsize(), q.nbytes) == (1, len(b"kept"))
    assert q.get().result() == b"kept"  # Tornado's own get() still works on it
    q.sent()
    waiting = q.get()
    assert not waiting.done()
    q.offer(b"next")
    assert waiting.done() and waiting.result() == b"next"
