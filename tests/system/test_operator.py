"""The server as an operator meets it: help, version, misspelt variables, the
start-up line on a terminal, the descriptor warning, worker ids, and what it
says when Redis or the port is not there."""

from __future__ import annotations

import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time

import tornado_pubsub
from tornado_pubsub.settings import _HELP

from tests.kit.procs import free_port, http_status
from tests.kit.procs import ROOT, ServerProcess, clean_env
from tests.kit.wait import wait_until
from tests.system.test_startup import run_main

WAIT = 15.0  # upper bound for any one wait


def test_dash_h_and_help_exit_0_list_every_variable_and_no_machine_path():
    short, long = run_main("-h"), run_main("--help")
    assert short.returncode == long.returncode == 0 and short.stdout == long.stdout
    for name in _HELP:
        assert f"PUBSUB_{name.upper()}" in long.stdout and f"--{name.replace('_', '-')}=" in long.stdout
    assert str(ROOT) not in long.stdout and ".py" not in long.stdout and "/usr" not in long.stdout


def test_version_exits_0():
    result = run_main("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"tornado-pubsub {tornado_pubsub.__version__}")


async def test_a_misspelt_variable_is_warned_about_with_the_closest_name():
    with ServerProcess(env={"PUBSUB_HISTORY_SIZ": "5", "PUBSUB_URL": "http://cli.example"}) as server:
        records = await wait_until(
            lambda: [r for r in server.records() if r.get("event") == "settings"], WAIT, "the settings warning"
        )
    (warning,) = records  # PUBSUB_URL belongs to the command line: not warned about
    assert (warning["level"], warning["variable"], warning["suggestion"]) == (
        "WARNING",
        "PUBSUB_HISTORY_SIZ",
        "PUBSUB_HISTORY_SIZE",
    )


def read_line(fd: int, timeout: float = WAIT) -> str:
    """One line from a pty, bounded in time."""
    data = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no line on the terminal: {data!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 4096)
            assert chunk, f"terminal closed: {data!r}"
            data += chunk
    return data.decode().splitlines()[0]


def test_on_a_terminal_one_line_says_where_to_connect_and_where_the_dashboard_is():
    port = free_port()
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tornado_pubsub", f"--port={port}", "--config=/dev/null"],
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=terminal,
    )
    os.close(terminal)
    try:
        line = read_line(controller)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(WAIT)
        os.close(controller)
    base = f"http://127.0.0.1:{port}"
    assert line == f"tornado-pubsub listening on {base}; dashboard {base}/dashboard/"


def test_not_on_a_terminal_nothing_but_json_is_printed():
    with ServerProcess() as server:
        pass
    assert server.lines and all(line.startswith("{") for line in server.lines)


async def test_no_descriptor_warning_when_max_connections_fits_the_limit():
    # 1000 connections fit in 1100 descriptors, although the 256 of headroom do not.
    with ServerProcess("--max_connections=1000", nofile=1100) as server:
        assert server.descriptor_limit() == 1100
        await wait_until(lambda: [r for r in server.records() if r.get("event") == "startup"], WAIT, "startup")
    assert not [r for r in server.records() if r.get("event") == "descriptor_limit"]


async def test_workers_label_every_record_and_their_conn_ids_are_unique(cluster, ws_at):
    (server,) = cluster(1, "--processes=2")
    clients = [await ws_at(server.port) for _ in range(12)]
    for client in clients:
        assert (await client.request({"type": "ping", "request_id": "p"}))["type"] == "pong"

    def connects() -> list[dict]:
        found = [r for r in server.records() if r.get("event") == "connect"]
        return found if len(found) == len(clients) else []

    records = await wait_until(connects, WAIT, "a connect record per client")
    assert len({r["conn_id"] for r in records}) == len(clients)
    assert all(r["conn_id"].startswith(f"w{r['worker']}-") and r["worker"] in (1, 2) for r in records)
    assert server.stop() == 0
    by_worker = [r for r in server.records() if r.get("event") != "workers"]  # the parent's own are not a worker's
    assert by_worker and all(r.get("worker") in (1, 2) for r in by_worker)


class DegradedServer(ServerProcess):
    """A server whose Redis is unreachable: ``/health`` answers 503 for good,
    so answering at all is what ready means."""

    def ready(self) -> bool:
        return http_status(self.base + "/health") is not None


async def test_redis_unreachable_at_startup_names_the_url_without_its_password_and_the_error():
    url = f"redis://user:hunter2@127.0.0.1:{free_port()}/0"
    with DegradedServer("--broker=redis", f"--redis-url={url}") as server:
        (record,) = await wait_until(
            lambda: [r for r in server.records() if r.get("outcome") == "unreachable_at_startup"], WAIT, "the warning"
        )
    assert record["redis_url"] == url.replace("hunter2", "***") and record["error"]
    assert "hunter2" not in server.log()


def test_a_port_in_use_is_reported_before_waiting_for_redis():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_main(
            f"--port={taken.getsockname()[1]}", "--broker=redis", f"--redis-url=redis://127.0.0.1:{free_port()}/0"
        )
    assert result.returncode == 1 and "cannot listen" in result.stderr and "Traceback" not in result.stderr
    assert '"redis"' not in result.stdout  # it never got as far as Redis
