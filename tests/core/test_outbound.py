"""The outbound queue without sockets: batches are bounded, replays are read
as positions, and overflow costs the same whatever is parked ahead."""

from __future__ import annotations

import pytest

from tornado_pubsub.core.history import Event, EventList, History
from tornado_pubsub.core.outbound import HOLE, WRITE_MAX, OutboundQueue, Replay
from tornado_pubsub.server import tornado_patches


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


@pytest.mark.parametrize("handover", [True, False])
async def test_the_waiting_writer_is_handed_each_item_and_a_cancelled_wait_is_skipped(monkeypatch, handover):
    # tornado_patches' queue_handover on, and off (Tornado's get/put_nowait).
    monkeypatch.setitem(tornado_patches.ENABLED, "queue_handover", handover)
    q = queue()
    waiting = q.get()
    assert not waiting.done()
    q.offer(b"first")
    assert waiting.done() and waiting.result() == b"first"
    assert q.take(waiting.result()) == [b"first"]
    q.sent()
    gone = q.get()  # a writer that went away: its wait is cancelled, not resolved
    gone.cancel()
    q.offer(b"second")  # no one to hand it to: it stays queued, counted
    assert (q.qsize(), q.nbytes) == (1, len(b"second"))
    again = q.get()
    assert again.done() and again.result() == b"second"
    q.sent()
    later = q.get()
    q.offer(b"third")
    q.offer(b"fourth")  # the writer holds "third" (taken): this one waits in the queue
    assert later.result() == b"third" and q.take(later.result()) == [b"third", b"fourth"]
