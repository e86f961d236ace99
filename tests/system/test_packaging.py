"""The package as a user installs it: a wheel built from the checkout (offline),
installed into a folder of its own, run from another folder with nothing of
the checkout importable.

The wheel must hold tornado_pubsub and nothing else at its top (no
``handlers`` to collide with other projects in site-packages), with the
handlers, the OpenAPI document, the default config and the dashboard inside
it; the installed server must serve them, and the ``pubsub`` command must run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.kit.procs import ROOT, ServerProcess, clean_env

#: What a source distribution would hold: everything the build reads.
SOURCES = ("pyproject.toml", "requirements.txt", "tornado_pubsub", "handlers", "conf")
BUILD_TIMEOUT = 180


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert result.returncode == 0, f"{argv} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The wheel, the folder it was installed into, and an unrelated working folder."""
    tmp = tmp_path_factory.mktemp("packaging")
    source = tmp / "source"
    source.mkdir()
    for name in SOURCES:  # a copy, so no build/ or egg-info lands in the checkout (and none is reused)
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    env = clean_env(PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    dist, target, elsewhere = tmp / "dist", tmp / "target", tmp / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip"]
    run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(dist), str(source)], tmp, env)
    (wheel,) = dist.glob("tornado_pubsub-*.whl")
    run([*pip, "install", "--no-deps", "--no-index", "-q", "--target", str(target), str(wheel)], tmp, env)
    return {"wheel": wheel, "target": target, "elsewhere": elsewhere}


def installed_env(installed: dict[str, Path]) -> dict[str, str]:
    """Only the install folder on the path (the dependencies come from this
    interpreter's site-packages); the checkout is neither the working
    directory nor on PYTHONPATH."""
    return clean_env(PYTHONPATH=str(installed["target"]), PYTHONUNBUFFERED="1")


def test_the_wheel_holds_one_package_with_its_data_and_ranges_for_dependencies(installed):
    with zipfile.ZipFile(installed["wheel"]) as wheel:
        names = set(wheel.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = wheel.read(info).decode()
        top_level = wheel.read(info.replace("METADATA", "top_level.txt")).decode().split()
    assert {name.split("/", 1)[0] for name in names} == {"tornado_pubsub", info.split("/", 1)[0]}
    assert top_level == ["tornado_pubsub"]
    for packaged in (
        "tornado_pubsub/handlers/ws.py",
        "tornado_pubsub/conf/openapi.json",
        "tornado_pubsub/conf/pubsub.conf",
        "tornado_pubsub/static/dashboard/index.html",
    ):
        assert packaged in names, f"{packaged} is not in the wheel"
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    tornado = next(r for r in requires if r.startswith("tornado"))
    assert ">=6.2" in tornado and "<7" in tornado, tornado
    assert not [r for r in requires if "==" in r], f"exact pins in the package's dependencies: {requires}"


def test_nothing_named_handlers_is_installed_at_the_top(installed):
    assert sorted(p.name for p in installed["target"].iterdir() if not p.name.endswith(".dist-info")) == [
        "bin",
        "tornado_pubsub",
    ]


def test_the_installed_package_is_the_one_imported_and_finds_its_packaged_config(installed):
    probe = "import tornado_pubsub, tornado_pubsub.settings as s; print(tornado_pubsub.__file__); print(s.PACKAGED_CONFIG)"
    result = run([sys.executable, "-c", probe], installed["elsewhere"], installed_env(installed))
    module, config = result.stdout.split()
    assert Path(module).is_relative_to(installed["target"]), module
    assert Path(config).is_relative_to(installed["target"]) and Path(config).is_file(), config


async def test_the_installed_server_serves_openapi_and_the_dashboard_from_any_folder(installed):
    server = ServerProcess(
        env=installed_env(installed),
        cwd=installed["elsewhere"],
        config=None,  # no conf/ here: the packaged config file is read
        tmp=installed["elsewhere"].parent,
    )
    with server:
        with urllib.request.urlopen(server.url + "/openapi.json", timeout=5) as response:
            assert response.status == 200
            assert json.load(response)["openapi"].startswith("3.")
        with urllib.request.urlopen(server.url + "/dashboard", timeout=5) as response:
            assert response.status == 200
            assert b"<html" in response.read().lower()
        with urllib.request.urlopen(server.url + "/dashboard/static/main.js", timeout=5) as response:
            assert response.status == 200
        command = installed["target"] / "bin" / "pubsub"
        health = run([str(command), "--url", server.url, "health"], installed["elsewhere"], installed_env(installed))
        assert json.loads(health.stdout)["status"] == "ok"
    assert "Traceback" not in server.log(), server.log()[-3000:]


def test_the_pubsub_command_runs_from_any_folder(installed):
    command = installed["target"] / "bin" / "pubsub"
    assert os.access(command, os.X_OK)
    result = run([str(command), "--help"], installed["elsewhere"], installed_env(installed))
    assert result.stdout.startswith("usage: pubsub")
