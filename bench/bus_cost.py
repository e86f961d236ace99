"""What a publish costs on the Redis broker, per part (README, Cost model).

    python bench/bus_cost.py                    # 20 000 publishes, 1 subscriber
    python bench/bus_cost.py --subs 100 --messages 5000

Two processes on one Redis (its database emptied first), both pinned to core
0: ``A`` takes the publisher and the subscribers (bench ``fanout``), ``B``
serves nobody.  Reported, per publish: A's server CPU (receive, number,
render, ack, log, read it back off the bus, deliver), B's (reading the event
off the bus and finding no subscriber: what every process pays for every
publish in the cluster), and Redis's own (``INFO commandstats`` for the
publish script, ``INFO cpu`` for the whole server).  Needs a redis-server;
``--redis-url`` (default ``redis://127.0.0.1:6379/15``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (the runner's server and load generator helpers)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 1/100 s


def redis_figures(client: redis.Redis) -> tuple[float, int, float]:
    """(usec spent in EVALSHA, EVALSHA calls, Redis's CPU seconds so far)."""
    stats = client.info("commandstats").get("cmdstat_evalsha", {"usec": 0, "calls": 0})
    cpu = client.info("cpu")
    return float(stats["usec"]), int(stats["calls"]), float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subs", type=int, default=1)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    args = parser.parse_args()
    args.ours_arg, args.base = [], None
    run.flush_redis(args.redis_url)
    client = redis.Redis.from_url(args.redis_url)
    with contextlib.ExitStack() as stack:
        port_a, pid_a = stack.enter_context(run.server("ours_redis", args))
        _, pid_b = stack.enter_context(run.server("ours_redis", args))
        cpu_a, cpu_b = cpu_seconds(pid_a), cpu_seconds(pid_b)
        usec0, calls0, redis0 = redis_figures(client)
        result = run.loadgen("fanout", port_a, pid_a, {"subs": args.subs, "messages": args.messages}, timeout=300)
        usec1, calls1, redis1 = redis_figures(client)
        cpu_a, cpu_b = cpu_seconds(pid_a) - cpu_a, cpu_seconds(pid_b) - cpu_b
    client.close()
    if "error" in result:
        print(json.dumps(result))
        return 1
    n = args.messages
    calls = calls1 - calls0  # the publishes plus the bench's few other scripts (create, subscribe)
    report = {
        "subs": args.subs,
        "messages": n,
        "events_per_sec": round(result["events_per_sec"]),
        "lost": result["lost"],
        "duplicates": result["duplicates"],
        "out_of_order": result["out_of_order"],
        "A_us_per_publish": round(cpu_a / n * 1e6, 1),
        "B_us_per_publish": round(cpu_b / n * 1e6, 1),
        "redis_evalsha_us_per_call": round((usec1 - usec0) / max(calls, 1), 1),
        "redis_cpu_us_per_publish": round((redis1 - redis0) / n * 1e6, 1),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
