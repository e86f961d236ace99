"""Start-up as a user sees it: ``python -m tornado_pubsub`` with a bad setting,
a taken port or a foreign address exits non-zero with one line and no
traceback; ``--help`` lists every setting with its default."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys

import pytest

from tests.kit.procs import ROOT, clean_env
from tornado_pubsub.settings import Settings


def run_main(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tornado_pubsub", *args],
        cwd=ROOT,
        env=clean_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=20,
    )


@pytest.mark.parametrize(
    "args, env",
    [(["--queue-size=0"], {}), (["--overflow-policy=sometimes"], {}), ([], {"PUBSUB_PORT": "eighty"})],
    ids=["queue_size_0", "bad_policy", "bad_env"],
)
def test_main_invalid_setting_exits_nonzero_one_line_no_traceback(args, env):
    result = run_main(*args, env=env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr and result.stdout == ""


def test_main_help_lists_every_setting_with_default():
    result = run_main("--help")
    assert result.returncode == 0
    output = result.stdout + result.stderr
    for field in dataclasses.fields(Settings):
        assert f"--{field.name.replace('_', '-')}" in output, field.name
    assert "(default 1000)" in output and "drop_oldest" in output


def test_main_port_in_use_exits_nonzero_one_line_no_traceback():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_main(f"--port={taken.getsockname()[1]}")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "cannot listen" in result.stderr


def test_main_address_not_on_this_host_exits_nonzero_one_line_no_traceback():
    result = run_main("--address=192.0.2.1", "--port=0")  # TEST-NET-1: never a local address
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
