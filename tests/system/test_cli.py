"""The command line, run as a subprocess against a real server subprocess, as a user would."""

from __future__ import annotations

import argparse
import json
import os
import pty
import signal
import subprocess
import sys
import time
import tomllib
from typing import Iterator

import pytest

import tornado_pubsub

from tests.kit.procs import free_port
from tests.kit.procs import ROOT, ServerProcess, clean_env

WAIT = 30.0  # upper bound for any one command or wait


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess() as s:
        yield s


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[ServerProcess]:
    with ServerProcess("--api_key=s3cret") as s:
        yield s


def cli(server: ServerProcess | None, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess:
    """Run ``python -m tornado_pubsub.client.cli ARGS`` with PUBSUB_URL pointing at ``server``."""
    if server is not None:
        env.setdefault("PUBSUB_URL", server.url)
    return subprocess.run(
        [sys.executable, "-m", "tornado_pubsub.client.cli", *args],
        cwd=ROOT,
        env=clean_env(**{"PYTHONPATH": str(ROOT), **env}),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def wait_subscribers(server: ServerProcess, topic: str, count: int) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        topics = json.loads(cli(server, "topics").stdout)["topics"]
        if any(t["name"] == topic and t["subscribers"] == count for t in topics):
            return
        time.sleep(0.05)
    raise AssertionError(f"{topic} never had {count} subscribers")


def start_sub(server: ServerProcess, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tornado_pubsub.client.cli", "sub", *args],
        cwd=ROOT,
        env=clean_env(PYTHONPATH=str(ROOT), PUBSUB_URL=server.url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"still running; stdout {out!r} stderr {err!r}")
    return proc.returncode, out, err


# -- topics, create, delete, stats, health ----------------------------------------------------------


def test_create_list_delete_round_trip(server):
    created = cli(server, "create", "round-trip")
    assert created.returncode == 0 and json.loads(created.stdout) == {"status": "created", "topic": "round-trip"}
    again = cli(server, "create", "round-trip")
    assert again.returncode == 1 and "already exists" in one_error_line(again)
    listed = cli(server, "topics")
    assert {"name": "round-trip", "subscribers": 0} in json.loads(listed.stdout)["topics"]
    assert cli(server, "delete", "round-trip").returncode == 0
    gone = cli(server, "delete", "round-trip")
    assert gone.returncode == 5 and "does not exist" in one_error_line(gone)


def test_stats_and_health_print_the_server_json(server):
    cli(server, "create", "counted")
    assert cli(server, "pub", "counted", "1").returncode == 0
    stats = json.loads(cli(server, "stats").stdout)
    assert stats["topics"]["counted"]["messages"] == 1 and stats["topics"]["counted"]["last_seq"] == 1
    health = cli(server, "health")
    assert health.returncode == 0 and json.loads(health.stdout)["status"] == "ok"


# -- pub and sub ------------------------------------------------------------------------------------


def test_sub_prints_one_json_line_per_event_and_exits_after_count(server):
    cli(server, "create", "live")
    sub = start_sub(server, "live", "--count", "3")
    wait_subscribers(server, "live", 1)
    acks = [cli(server, "pub", "live", payload) for payload in ('{"n": 1}', "plain words", "[1, 2]")]
    assert [json_lines(a.stdout)[0]["seq"] for a in acks] == [1, 2, 3]
    code, out, err = finish(sub)
    assert code == 0, err
    events = json_lines(out)
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert [e["payload"] for e in events] == [{"n": 1}, "plain words", [1, 2]]
    assert all(e["topic"] == "live" and e["epoch"] and e["ts"].endswith("Z") for e in events)


def test_sub_replays_last_n_or_resumes_since_a_seq(server):
    cli(server, "create", "replayed")
    assert cli(server, "pub", "replayed", stdin="a\nb\nc\nd\ne\n").returncode == 0
    last = cli(server, "sub", "replayed", "--last-n", "2", "--count", "2")
    assert [e["payload"] for e in json_lines(last.stdout)] == ["d", "e"]
    since = cli(server, "sub", "replayed", "--since", "3", "--count", "2")
    events = json_lines(since.stdout)
    assert [e["seq"] for e in events] == [4, 5] and since.stderr == "pubsub: subscribed to replayed\n"
    other = cli(server, "sub", "replayed", "--since", "3", "--epoch", "an-old-epoch", "--count", "5")
    assert [e["seq"] for e in json_lines(other.stdout)] == [1, 2, 3, 4, 5]
    assert "topic recreated or server restarted" in other.stderr.replace("pubsub: subscribed to replayed\n", "")


def test_pub_from_a_file_reports_progress_and_rate_on_stderr(server, tmp_path):
    cli(server, "create", "bulk")
    path = tmp_path / "messages.txt"
    path.write_text("".join(f'{{"n": {n}}}\n' for n in range(200)) + "\n\n")  # blank lines are skipped
    result = cli(server, "pub", "bulk", "--file", str(path))
    assert result.returncode == 0 and result.stdout == ""
    assert "published 200 messages to bulk" in one_error_line(result) and "msg/s" in result.stderr
    with_acks = cli(server, "pub", "bulk", "--acks", stdin="x\ny\n")
    assert [a["seq"] for a in json_lines(with_acks.stdout)] == [201, 202]
    assert json.loads(cli(server, "stats").stdout)["topics"]["bulk"]["messages"] == 202


def test_pub_with_an_id_is_idempotent(server):
    cli(server, "create", "idem")
    message_id = "0f8fad5b-d9cb-469f-a165-70867728950e"
    first = json_lines(cli(server, "pub", "idem", "1", "--id", message_id).stdout)[0]
    again = json_lines(cli(server, "pub", "idem", "1", "--id", message_id).stdout)[0]
    assert (first["seq"], first["duplicate"], again["seq"], again["duplicate"]) == (1, False, 1, True)


def test_sub_stops_cleanly_on_sigint(server):
    cli(server, "create", "interrupted")
    sub = start_sub(server, "interrupted")
    wait_subscribers(server, "interrupted", 1)
    sub.send_signal(signal.SIGINT)
    code, out, err = finish(sub)
    assert (code, out) == (0, "") and "Traceback" not in err


def test_sub_ends_with_not_found_when_the_topic_is_deleted(server):
    cli(server, "create", "doomed")
    sub = start_sub(server, "doomed")
    wait_subscribers(server, "doomed", 1)
    cli(server, "delete", "doomed")
    code, _, err = finish(sub)
    assert code == 5 and "no longer exists" in err


# -- errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [("topics",), ("pub", "x", "1"), ("sub", "x"), ("health",)])
def test_unreachable_server_is_one_line_and_exit_3(args):
    url = f"http://127.0.0.1:{free_port()}"
    result = cli(None, "--url", url, *args)
    assert result.returncode == 3
    assert "cannot" in one_error_line(result) and "is the server running" in result.stderr


def test_wrong_or_missing_api_key_is_exit_4_and_the_env_key_works(keyed_server):
    missing = cli(keyed_server, "topics")
    assert missing.returncode == 4 and "--api-key" in one_error_line(missing)
    wrong = cli(keyed_server, "pub", "x", "1", "--api-key", "nope")
    assert wrong.returncode == 4 and "unauthorized" in one_error_line(wrong)
    assert cli(keyed_server, "create", "keyed", PUBSUB_API_KEY="s3cret").returncode == 0
    published = cli(keyed_server, "--api-key", "s3cret", "pub", "keyed", "1")
    assert published.returncode == 0 and json_lines(published.stdout)[0]["seq"] == 1


@pytest.mark.parametrize("args", [("pub", "missing", "1"), ("sub", "missing"), ("delete", "missing")])
def test_missing_topic_is_exit_5(server, args):
    result = cli(server, *args)
    assert result.returncode == 5 and "missing" in one_error_line(result)


@pytest.mark.parametrize(
    "args",
    [
        ("sub",),
        ("sub", "t", "--last-n", "2", "--since", "1"),
        ("sub", "t", "--epoch", "e"),
        ("sub", "a", "b", "--since", "1"),
        ("nosuch",),
    ],
)
def test_bad_usage_is_exit_2(server, args):
    result = cli(server, *args)
    assert result.returncode == 2 and "usage" in result.stderr and "Traceback" not in result.stderr


def test_a_pub_usage_error_shows_the_usage_of_pub(server, tmp_path):
    result = cli(server, "pub", "x", "--file", str(tmp_path / "absent.txt"))
    assert result.returncode == 2 and result.stderr.startswith("usage: pubsub pub ")
    assert "cannot read" in result.stderr.splitlines()[-1]


def test_pub_json_refuses_what_is_not_json_and_publishes_nothing(server):
    cli(server, "create", "strict")
    for args in [("strict", "{bad", "--json"), ("--json", "strict", "plain words")]:
        refused = cli(server, "pub", *args)
        assert refused.returncode == 2 and "usage: pubsub pub" in refused.stderr and "not JSON" in refused.stderr
    from_stdin = cli(server, "pub", "strict", "--json", stdin='{"n": 1}\n{"n": 2\n')
    assert from_stdin.returncode == 2 and "line 2: not JSON" in from_stdin.stderr
    accepted = cli(server, "pub", "strict", '"a string"', "--json")
    assert accepted.returncode == 0
    stored = json_lines(accepted.stdout)[0]["seq"]  # 2 if line 1 left before line 2 stopped the rest, else 1
    events = json_lines(cli(server, "sub", "strict", "--last-n", "5", "--count", str(stored)).stdout)
    assert [e["payload"] for e in events] in ([{"n": 1}, "a string"], ["a string"])


def test_every_command_prints_one_compact_json_document_per_line_when_piped(server):
    outputs = [
        cli(server, "create", "styled"),
        cli(server, "pub", "styled", '{"n": "é"}'),
        cli(server, "sub", "styled", "--last-n", "1", "--count", "1"),
        cli(server, "topics"),
        cli(server, "stats"),
        cli(server, "health"),
    ]
    for result in outputs:
        assert result.returncode == 0, result.stderr
        (line,) = result.stdout.splitlines()
        assert line == json.dumps(json.loads(line), separators=(",", ":"), ensure_ascii=False)


def test_sub_on_a_terminal_pretty_prints_and_says_subscribed(server):
    cli(server, "create", "tty")
    cli(server, "pub", "tty", '{"n": 1}')
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tornado_pubsub.client.cli", "sub", "tty", "--last-n", "1", "--count", "1"],
            cwd=ROOT,
            env=clean_env(PYTHONPATH=str(ROOT), PUBSUB_URL=server.url),
            stdout=terminal,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.close(terminal)
        _, err = proc.communicate(timeout=WAIT)
        printed = b""
        while True:  # the child exited: read what it left on the terminal, up to EOF (EIO)
            try:
                chunk = os.read(controller, 65536)
            except OSError:
                break
            if not chunk:
                break
            printed += chunk
    finally:
        os.close(controller)
    text = printed.decode().replace("\r\n", "\n")
    assert proc.returncode == 0 and err == "pubsub: subscribed to tty\n"
    assert text.startswith("{\n  ") and json.loads(text)["payload"] == {"n": 1}


def test_sub_takes_several_topics(server):
    for topic in ("left", "right"):
        cli(server, "create", topic)
    sub = start_sub(server, "left", "right", "--count", "2")
    wait_subscribers(server, "right", 1)
    cli(server, "pub", "left", "1")
    cli(server, "pub", "right", "2")
    code, out, err = finish(sub)
    assert code == 0 and err == "pubsub: subscribed to left, right\n"
    assert sorted((e["topic"], e["payload"]) for e in json_lines(out)) == [("left", 1), ("right", 2)]


def test_sub_with_wait_for_topic_outlives_the_topic_and_reports_the_new_incarnation(server):
    cli(server, "create", "phoenix")
    sub = start_sub(server, "phoenix", "--wait-for-topic", "--count", "2")
    wait_subscribers(server, "phoenix", 1)
    cli(server, "pub", "phoenix", '"before"')
    cli(server, "delete", "phoenix")
    cli(server, "create", "phoenix")
    cli(server, "pub", "phoenix", '"after"')
    code, out, err = finish(sub)
    assert code == 0, err
    assert [(e["seq"], e["payload"]) for e in json_lines(out)] == [(1, "before"), (1, "after")]
    assert "topic recreated or server restarted" in err


def test_version_is_printed_and_exits_0():
    result = cli(None, "--version")
    assert result.returncode == 0 and result.stdout.strip() == f"pubsub {tornado_pubsub.__version__}"


def test_every_bench_flag_has_help():
    from tornado_pubsub.client.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    bench = commands.choices["bench"]
    flags = [a for a in bench._actions if a.option_strings]
    assert len(flags) >= 8 and all(a.help for a in flags), [a.dest for a in flags if not a.help]


def test_a_redis_outage_is_exit_6_not_1(tmp_path, redis_server):
    server = ServerProcess("--broker=redis", f"--redis-url={redis_server.url}", tmp=tmp_path).start()
    try:
        url = server.base
        assert cli(None, "create", "stored", PUBSUB_URL=url).returncode == 0
        redis_server.stop()
        for args in (("pub", "stored", "1"), ("topics",), ("create", "other")):
            result = cli(None, *args, PUBSUB_URL=url)
            assert result.returncode == 6, (args, result.stderr)
            assert "retry later" in one_error_line(result)
    finally:
        server.stop()


# -- bench and packaging -------------------------------------------------------------------------------


def test_bench_measures_a_complete_fan_out_and_cleans_up(server):
    result = cli(server, "bench", "--subscribers", "3", "--messages", "100", "--topic", "bench-test")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["complete"] is True and report["deliveries"] == 300
    assert report["delivery_rate"] > 0 and report["latency_ms"]["p50"] <= report["latency_ms"]["max"]
    assert "bench-test" not in cli(server, "topics").stdout


def test_pubsub_console_script_points_at_the_cli_main():
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)
    module, _, function = project["project"]["scripts"]["pubsub"].partition(":")
    assert (module, function) == ("tornado_pubsub.client.cli", "main")
    from tornado_pubsub.client import cli as cli_module

    assert callable(getattr(cli_module, function))
