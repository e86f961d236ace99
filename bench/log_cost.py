"""What one operation's log record costs (README, Cost model).

    python bench/log_cost.py            # both ways a record can be made
    python bench/log_cost.py --rounds 40

Formats and buffers a ``publish`` record as the server does (JSON, with a
configured secret to redact, written once per loop pass to /dev/null),
made directly (``log_op`` after ``configure_logging``) and through
``Logger.log`` (what ``log_op`` falls back to), alternately in one process
so both see the same machine.  Reports the best round of each, in
microseconds per record.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tornado_pubsub import logs  # noqa: E402

CONTEXT = {
    "topic": "bench.t1",
    "message_id": "6f1b2a9e-2c1d-4a8e-9b7f-1c2d3e4f5a6b",
    "seq": 77,
    "duplicate": False,
    "outcome": "ok",
    "conn_id": "c7f3a",
    "user": None,
    "remote": "127.0.0.1",
    "client_id": None,
    "request_id": "r55",
    "via": "ws",
}
PER_PASS = 20  # records per loop pass, about what a busy publisher gives


async def measure(rounds: int, per_round: int) -> dict[str, float]:
    template = logs.OpRecord.template
    best = {"direct": float("inf"), "Logger.log": float("inf")}
    for _ in range(rounds):
        for way in best:
            logs.OpRecord.template = template if way == "direct" else None
            start = time.perf_counter()
            for i in range(per_round):
                logs.log_op("publish", **CONTEXT)
                if i % PER_PASS == PER_PASS - 1:
                    await asyncio.sleep(0)
            best[way] = min(best[way], (time.perf_counter() - start) / per_round * 1e6)
    logs.OpRecord.template = template
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=5000)
    args = parser.parse_args()
    report = sys.stdout
    sys.stdout = open(os.devnull, "w")  # the records' destination (configure_logging binds it)
    logs.configure_logging("info", "json", "a-configured-secret-to-redact")
    best = asyncio.run(measure(args.rounds, args.per_round))
    report.write(" ".join(f"{way}: {us:.1f} us/record" for way, us in best.items()) + "\n")


if __name__ == "__main__":
    main()
