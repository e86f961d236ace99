"""docker-compose.yml and the Dockerfile, checked without a Docker engine: the
compose file is parsed, nginx's config is rendered by the very script the
nginx service runs, and the two must agree; the container's healthcheck
follows the port however the server was given it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tornado_pubsub.server.healthcheck import health_url, server_arguments
from tornado_pubsub.settings import Settings

from tests.kit.procs import Proc, free_port
from tests.kit.procs import ROOT, clean_env

COMPOSE = ROOT / "docker-compose.yml"


def services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def server_services() -> dict[str, dict]:
    """The tornado-pubsub services: those built from this repository."""
    return {name: spec for name, spec in services().items() if spec.get("build") == "."}


def rendered_upstreams(tmp_path: Path) -> list[str]:
    """The nginx service's config rendered as the container renders it; its ``upstream pubsub`` servers."""
    nginx = services()["nginx"]
    mounts = dict(volume.rsplit(":", 1)[0].split(":", 1)[::-1] for volume in nginx["volumes"])  # container -> host
    template, script = ROOT / mounts["/etc/pubsub/nginx.conf"], ROOT / mounts["/etc/pubsub/render-nginx.sh"]
    assert "/etc/pubsub/render-nginx.sh" in " ".join(nginx["command"])
    output = tmp_path / "nginx.conf"
    subprocess.run(
        ["sh", str(script), str(template), str(output)],
        env=clean_env(PUBSUB_UPSTREAMS=nginx["environment"]["PUBSUB_UPSTREAMS"]),
        check=True,
        timeout=10,
    )
    block = re.search(r"upstream pubsub \{(.*?)\}", output.read_text(), re.S)
    assert block, "no upstream block in the rendered config"
    return re.findall(r"^\s*server (\S+)", block.group(1), re.M)


def test_nginx_upstream_lists_exactly_the_server_services(tmp_path):
    servers = server_services()
    assert len(servers) >= 2
    expected = sorted(f"{name}:{spec['environment']['PUBSUB_PORT']}" for name, spec in servers.items())
    assert sorted(rendered_upstreams(tmp_path)) == expected


def test_the_rendered_config_keeps_everything_but_the_example_upstreams(tmp_path):
    nginx = services()["nginx"]
    rendered_upstreams(tmp_path)
    rendered = (tmp_path / "nginx.conf").read_text()
    template = (ROOT / "conf" / "nginx.conf").read_text()
    assert "127.0.0.1:808" not in rendered and "location = /ws" in rendered and "keepalive 32;" in rendered
    assert len(rendered.splitlines()) == len(template.splitlines()) - 4 + len(server_services())
    assert any(port.endswith(":80") for port in nginx["ports"]) and "listen 80;" in rendered


def test_servers_share_the_compose_redis_and_trust_only_the_proxy():
    everything = services()
    for name, spec in server_services().items():
        env = spec["environment"]
        host_port = env["PUBSUB_REDIS_URL"].split("://", 1)[1].split("/", 1)[0]
        assert env["PUBSUB_BROKER"] == "redis" and host_port == "redis:6379" and "redis" in everything, name
        assert env["PUBSUB_BEHIND_PROXY"] == "true" and "ports" not in spec, name  # reachable through nginx only
        Settings(broker="redis", redis_url=env["PUBSUB_REDIS_URL"], port=int(env["PUBSUB_PORT"]))  # valid settings


def test_dockerfile_installs_the_package_and_probes_with_the_healthcheck_module():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^RUN pip install --no-deps \. && pubsub --version", dockerfile, re.M)
    # The dependencies at the versions CI tested, not whatever the ranges allow today.
    assert re.search(r"^RUN pip install -c constraints\.txt -r requirements\.txt$", dockerfile, re.M)
    assert re.search(r"^COPY requirements\.txt constraints\.txt \./$", dockerfile, re.M)
    (healthcheck,) = [line for line in dockerfile.splitlines() if line.strip().startswith("CMD") and "health" in line]
    assert '"tornado_pubsub.server.healthcheck"' in healthcheck


def test_server_arguments_are_what_follows_the_module():
    assert server_arguments(["python", "-m", "tornado_pubsub", "--port=9000"]) == ["--port=9000"]
    assert server_arguments(["/usr/bin/pubsub-server", "--port=9000"]) == ["--port=9000"]
    assert health_url(Settings(address="0.0.0.0", port=9000)) == "http://127.0.0.1:9000/health"


def healthcheck(pid: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tornado_pubsub.server.healthcheck", str(pid)],
        cwd=ROOT,
        env=clean_env(PUBSUB_PORT="1"),  # the probe's own environment must not matter
        capture_output=True,
        text=True,
        timeout=20,
    )


def test_healthcheck_follows_the_port_however_the_server_was_given_it(tmp_path):
    ports = [free_port() for _ in range(3)]
    config = tmp_path / "pubsub.conf"
    config.write_text(f"port = {ports[2]}\n")
    relative = os.path.relpath(config, ROOT)  # relative to the server's working directory, as in the Dockerfile
    server = [sys.executable, "-m", "tornado_pubsub"]
    started = [
        Proc("by-flag", [*server, f"--port={ports[0]}", "--config=/dev/null"], tmp_path / "1.log", ports[0], clean_env()),
        Proc("by-env", [*server, "--config=/dev/null"], tmp_path / "2.log", ports[1], clean_env(PUBSUB_PORT=str(ports[1]))),
        Proc("by-file", [*server, f"--config={relative}"], tmp_path / "3.log", ports[2], clean_env()),
    ]
    try:
        for proc in started:
            proc.start()
            result = healthcheck(proc.pid)
            assert result.returncode == 0, (proc.name, result.stderr)
    finally:
        for proc in started:
            proc.stop()
    gone = healthcheck(started[0].pid)
    assert gone.returncode == 1 and "unhealthy" in gone.stderr
