"""Run the benchmark suite: every scenario against our server and the reference
broadcasters, in the same run, repeated; medians, ratios, JSON and Markdown.

    python bench/run.py                 # the full suite (about 6 minutes)
    python bench/run.py --quick         # one short pass (about 1.5 minutes)
    python bench/run.py --scenarios fanout,latency --reps 5
    python bench/run.py --base /tmp/base   # also run the tree in /tmp/base as "base"

Each server is started fresh for each measurement, pinned to core 0 with
``taskset -c 0``; the Node load generator runs on core 1.  Within one
repetition the servers are measured back to back on the same scenario, so a
ratio compares figures taken minutes apart at most, under the same noise.
Results go to ``bench/results/<stamp>.json`` and ``.md`` (and ``latest.*``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
SERVER_CPU = "0"
LOADGEN_CPU = "1"
REFERENCES = ("ref_tornado", "ref_node", "ref_node_batch")

# (scenario, label, loadgen args, full-size args, quick-size args)
PLAN: list[tuple[str, str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ("fanout", "S=1", {"subs": 1}, {"messages": 20000}, {"messages": 6000}),
    ("fanout", "S=10", {"subs": 10}, {"messages": 10000}, {"messages": 3000}),
    ("fanout", "S=100", {"subs": 100}, {"messages": 2500}, {"messages": 800}),
    ("fanout", "S=1000", {"subs": 1000}, {"messages": 400}, {"messages": 150}),
    ("latency", "1000/s x 10", {"subs": 10, "rate": 1000}, {"seconds": 5}, {"seconds": 2}),
    ("latency", "300/s x 100", {"subs": 100, "rate": 300}, {"seconds": 5}, {"seconds": 2}),
    # The latency goal (p99 within 1.2x the Node reference's); the
    # load generator receives 100 000 events a second here, so check its CPU.
    ("latency", "1000/s x 100", {"subs": 100, "rate": 1000}, {"seconds": 5}, {"seconds": 3}),
    ("topics", "100 x 10", {"topics": 100, "subs": 10}, {"messages": 150}, {"messages": 60}),
    ("connections", "idle", {"topics": 100}, {"conns": 10000}, {"conns": 2000}),
    ("slowconsumer", "flood", {"subs": 10}, {"messages": 50000}, {"messages": 20000}),
]

# --growth: how throughput and memory scale (for the table in bench/README.md).
# Topics: 1,000 subscriptions spread over T topics, so the fan-out volume is constant.
GROWTH: list[tuple[str, str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    *(row for row in PLAN if row[1] in ("S=1", "S=100", "S=1000")),
    ("fanout", "S=3000", {"subs": 3000}, {"messages": 300}, {"messages": 100}),
    ("fanout", "S=10000", {"subs": 10000}, {"messages": 100}, {"messages": 30}),
    ("topics", "1 x 1000", {"topics": 1, "subs": 1000}, {"messages": 800}, {"messages": 300}),
    ("topics", "10 x 100", {"topics": 10, "subs": 100}, {"messages": 600}, {"messages": 200}),
    ("topics", "100 x 10", {"topics": 100, "subs": 10}, {"messages": 300}, {"messages": 100}),
    ("topics", "1000 x 1", {"topics": 1000, "subs": 1}, {"messages": 60}, {"messages": 20}),
    ("connections", "1000 idle", {"topics": 100}, {"conns": 1000}, {"conns": 1000}),
    ("connections", "10000 idle", {"topics": 100}, {"conns": 10000}, {"conns": 10000}),
]

# The figure each scenario is judged by, and whether higher is better.
HEADLINE = {
    "fanout": ("events_per_sec", True),
    "topics": ("events_per_sec", True),
    "latency": ("p99_ms", False),
    "connections": ("rss_per_conn_kb", False),
    "slowconsumer": ("rss_growth_kb", False),
}
# Scenarios measured once per suite (slow to set up) and the servers they run on.
ONCE = {"connections"}
# The plain Tornado reference awaits each subscriber in turn, so a paused
# reader stalls it completely: the scenario would only measure its timeout.
SKIP = {("slowconsumer", "ref_tornado")}
# The batching Node reference only shows the load generator's ceiling.
SKIP |= {(scenario, "ref_node_batch") for scenario in ("latency", "connections", "slowconsumer")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(name: str, port: int, args: argparse.Namespace) -> tuple[list[str], Path]:
    """The command line and working directory that start server ``name``."""
    py = sys.executable
    if name in ("ours", "base", "ours_redis"):
        tree = Path(args.base) if name == "base" else ROOT
        broker = ["--broker=redis", f"--redis_url={args.redis_url}"] if name == "ours_redis" else []
        return [py, "-m", "tornado_pubsub", f"--port={port}", "--log-level=info", *broker, *args.ours_arg], tree
    if name == "ref_tornado":
        return [py, str(BENCH / "ref_tornado.py"), f"--port={port}"], ROOT
    if name in ("ref_node", "ref_node_batch"):
        return ["node", str(BENCH / "ref_node.js"), f"--port={port}", *(["--batch"] if name == "ref_node_batch" else [])], ROOT
    raise ValueError(name)


def queue_bound_kb(args: argparse.Namespace) -> float:
    """Our queue's byte bound as the servers were started: the last
    ``--ours-arg=--queue_max_bytes=N`` given, else the server's default."""
    sys.path.insert(0, str(ROOT))
    from tornado_pubsub.settings import Settings  # the project's environment runs this script

    bound = Settings().queue_max_bytes
    for arg in args.ours_arg:
        name, _, value = arg.lstrip("-").partition("=")
        if name.replace("-", "_") == "queue_max_bytes":
            bound = int(value)
    return bound / 1024


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} not healthy after {timeout}s")


@contextlib.contextmanager
def server(name: str, args: argparse.Namespace) -> Iterator[tuple[int, int]]:
    """Start server ``name`` on core 0; yields (port, pid); stops it afterwards."""
    port = free_port()
    cmd, cwd = server_command(name, port, args)
    env = dict(os.environ, PYTHONPATH=str(cwd))
    proc = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, *cmd], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_healthy(port, proc)
        yield port, proc.pid  # taskset execs the server: same pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            err = proc.stderr.read().decode(errors="replace").strip()
            if err and proc.returncode not in (0, -signal.SIGTERM):
                print(f"  [{name} stderr] {err[-500:]}", file=sys.stderr)
            proc.stderr.close()


def loadgen(scenario: str, port: int, pid: int, params: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one scenario with the Node load generator on core 1."""
    cmd = ["taskset", "-c", LOADGEN_CPU, "node", str(BENCH / "loadgen.js"), f"--scenario={scenario}", f"--port={port}", f"--pid={pid}"]
    cmd += [f"--{k}={v}" for k, v in params.items()]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=BENCH)
    except subprocess.TimeoutExpired:
        return {"scenario": scenario, "error": f"load generator timed out after {timeout}s"}
    lines = out.stdout.strip().splitlines()
    if not lines:
        return {"scenario": scenario, "error": f"no output (rc={out.returncode}): {out.stderr[-500:]}"}
    return json.loads(lines[-1])


def flush_redis(url: str) -> None:
    """Empty the bench's own Redis database, so every run starts with no topics and no history."""
    import redis  # the project's environment runs this script

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def measure(name: str, scenario: str, params: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    if name == "ours_redis":
        flush_redis(args.redis_url)
    elif "--broker=redis" in args.ours_arg and name in ("ours", "base"):
        flush_redis(next((a.split("=", 1)[1] for a in args.ours_arg if a.startswith("--redis_url=")), args.redis_url))
    with server(name, args) as (port, pid):
        return loadgen(scenario, port, pid, params, timeout=args.timeout)


def median(values: list[float]) -> float | None:
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(values) if values else None


def summarize(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Medians per (config, server) and ratios of ours to each reference, paired by repetition."""
    summary: dict[str, Any] = {}
    for key, by_server in runs.items():
        scenario = key.split(" ", 1)[0]
        metric, higher = HEADLINE[scenario]
        entry: dict[str, Any] = {"metric": metric, "higher_is_better": higher, "servers": {}, "ratios": {}}
        for name, reps in by_server.items():
            fields = sorted({k for r in reps for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
            entry["servers"][name] = {k: median([r.get(k) for r in reps]) for k in fields}
            entry["servers"][name]["errors"] = [r["error"] for r in reps if "error" in r]
            entry["servers"][name]["reps"] = len(reps)
        for mine in ("ours", "base", "ours_redis"):
            for ref in (*REFERENCES, "base", "ours"):
                if mine == ref or mine not in by_server or ref not in by_server:
                    continue
                pairs = [
                    (a.get(metric), b.get(metric))
                    for a, b in zip(by_server[mine], by_server[ref])
                    if isinstance(a.get(metric), (int, float)) and b.get(metric)
                ]
                # A ratio above 1 is always "ours is better": inverted for lower-is-better figures.
                ratios = [a / b if higher else b / a for a, b in pairs if a]
                entry["ratios"][f"{mine}/{ref}"] = median(ratios)
        summary[key] = entry
    return summary


def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    servers = meta["servers"]
    lines = [
        f"# tornado-pubsub benchmark, {meta['started']}",
        "",
        f"Command: `{meta['command']}`  ",
        f"Repetitions: {meta['reps']} (medians shown); server on core {SERVER_CPU}, load generator on core {LOADGEN_CPU}.  ",
        "Ratios are paired by repetition and always read \"above 1 = ours better\" "
        "(for latency and memory the reference's figure is divided by ours).",
        "",
    ]
    ratio_cols = [k for k in next(iter(summary.values()))["ratios"]] if summary else []
    for scenario in HEADLINE:
        keys = [k for k in summary if k.split(" ", 1)[0] == scenario]
        if not keys:
            continue
        metric = summary[keys[0]]["metric"]
        lines += [f"## {scenario} ({metric})", ""]
        head = ["config", *servers, *ratio_cols, "ours: lost / dup / out-of-order", "ours: loadgen cpu"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for key in keys:
            e = summary[key]
            row = [key.split(" ", 1)[1]]
            digits = 1 if metric in ("p99_ms", "rss_per_conn_kb") else 0
            for name in servers:
                s = e["servers"].get(name)
                row.append(fmt(s.get(metric), digits) if s else "–")
            row += [fmt(e["ratios"].get(c), 2) + "×" if e["ratios"].get(c) else "–" for c in ratio_cols]
            ours = e["servers"].get("ours", {})
            row.append(" / ".join(fmt(ours.get(k)) for k in ("lost", "duplicates", "out_of_order")))
            row.append(fmt(ours.get("loadgen_cpu"), 2))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        detail = DETAIL.get(scenario)
        if detail:
            lines += [f"Details ({', '.join(detail)}):", ""]
            for key in keys:
                for name in servers:
                    s = summary[key]["servers"].get(name)
                    if s:
                        vals = ", ".join(f"{k}={fmt(s.get(k), 1)}" for k in detail)
                        lines.append(f"- {key.split(' ', 1)[1]} / {name}: {vals}")
            lines.append("")
    ceiling = meta.get("loadgen_ceiling")
    if ceiling:
        lines += ["## Load generator headroom", "", ceiling, ""]
    errors = [(k, n, err) for k, e in summary.items() for n, s in e["servers"].items() for err in s["errors"]]
    if errors:
        lines += ["## Errors", ""] + [f"- {k} / {n}: {err[:300]}" for k, n, err in errors] + [""]
    return "\n".join(lines)


DETAIL = {
    "latency": ["p50_ms", "p90_ms", "p99_ms", "max_ms", "lost"],
    "connections": ["rss_before_kb", "rss_after_kb", "setup_seconds"],
    "slowconsumer": ["rss_growth_kb", "queue_bound_kb", "lost", "health_p99_ms", "health_max_ms", "msgs_per_sec"],
    "fanout": ["server_us_per_event", "msgs_per_sec", "loadgen_cpu", "lost", "duplicates", "out_of_order"],
    "topics": ["server_us_per_event", "msgs_per_sec", "foreign_events", "lost", "duplicates", "out_of_order"],
}


def ceiling_note(summary: dict[str, Any]) -> str | None:
    """Evidence that the load generator is not the bottleneck."""
    rows = []
    for key, e in summary.items():
        if not key.startswith(("fanout", "topics")):
            continue
        ours = e["servers"].get("ours", {})
        refs = {n: e["servers"].get(n, {}).get("events_per_sec") for n in ("ref_node", "ref_node_batch")}
        best = max((v for v in refs.values() if v), default=None)
        if best and ours.get("events_per_sec"):
            rows.append(
                f"- {key}: best reference {best:,.0f} events/s ({best / ours['events_per_sec']:.1f}x our "
                f"{ours['events_per_sec']:,.0f}); the load generator used {ours.get('loadgen_cpu', 0):.2f} of its core "
                f"during our run"
            )
    return "\n".join(rows) or None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 3, quick 1)")
    parser.add_argument("--scenarios", default=",".join(HEADLINE), help="comma-separated subset of " + ",".join(HEADLINE))
    parser.add_argument("--servers", default="ours," + ",".join(REFERENCES), help="comma-separated subset")
    parser.add_argument("--base", help="another source tree to measure as server 'base' (before/after)")
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/15",
        help="the Redis of server ours_redis (our server on the Redis broker); its database is emptied before each run",
    )
    parser.add_argument("--ours-arg", action="append", default=[], help="extra flag for our server (repeatable)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds per load generator run")
    parser.add_argument("--only", default="", help="run only configs whose label contains this (e.g. S=100)")
    parser.add_argument("--growth", action="store_true", help="run the growth plan (scaling table) instead of the suite")
    args = parser.parse_args()
    reps = args.reps or (1 if args.quick else 3)
    scenarios = args.scenarios.split(",")
    servers = args.servers.split(",")
    if args.base and "base" not in servers:
        servers.insert(1, "base")
    for tool in ("taskset", "node"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is required", file=sys.stderr)
            return 2
    if not (BENCH / "node_modules" / "ws").is_dir():
        print("bench: run `npm ci` in bench/ first", file=sys.stderr)
        return 2
    # 10 000 connections need 10 000 descriptors on each side.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    started = datetime.datetime.now(datetime.timezone.utc)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for rep in range(reps):
        for scenario, label, fixed, full, quick in GROWTH if args.growth else PLAN:
            if scenario not in scenarios or args.only not in label or (scenario in ONCE and rep):
                continue
            params = {**fixed, **(quick if args.quick else full)}
            key = f"{scenario} {label}"
            for name in servers:
                if (scenario, name) in SKIP:
                    continue
                t0 = time.monotonic()
                result = measure(name, scenario, params, args)
                if scenario == "slowconsumer" and name in ("ours", "base"):
                    result["queue_bound_kb"] = queue_bound_kb(args)
                runs.setdefault(key, {}).setdefault(name, []).append(result)
                metric = HEADLINE[scenario][0]
                shown = result.get("error") or f"{metric}={fmt(result.get(metric), 1)}"
                print(f"[rep {rep + 1}/{reps}] {key:<24} {name:<12} {shown}  ({time.monotonic() - t0:.1f}s)", flush=True)

    summary = summarize(runs)
    command = "python bench/run.py " + " ".join(sys.argv[1:])
    meta = {
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": command.strip(),
        "reps": reps,
        "servers": servers,
        "quick": args.quick,
        "cpus": os.cpu_count(),
        "loadavg_at_end": os.getloadavg(),
    }
    meta["loadgen_ceiling"] = ceiling_note(summary)
    RESULTS.mkdir(exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    doc = {"meta": meta, "summary": summary, "runs": runs}
    text = markdown(summary, meta)
    for name in (stamp, "latest"):
        (RESULTS / f"{name}.json").write_text(json.dumps(doc, indent=2))
        (RESULTS / f"{name}.md").write_text(text)
    print()
    print(text)
    print(f"results: {RESULTS / (stamp + '.json')} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
