"""The `qdrant` role on a real test host (Debian booted with systemd-nspawn, over SSH): the docker role
first (dockerd runs inside the host), then qdrant.service - a systemd unit running `docker run` with the
GPU passed through, QDRANT__GPU__INDEXING=1, storage and snapshot folders, ports on 127.0.0.1, the API
key only in a 0600 env file, systemd's restart policy and Docker's health check.

Containers cannot run inside nspawn (docs/TESTING.md §5) and no image can be pulled here: a tiny
stand-in image is imported under the pinned tags so that the role finds it and skips the pull, the
unit's definition is checked as systemd parsed it and as Docker accepts it (`docker create`, then
`docker inspect`), and the health-check script runs against an HTTP server here. A running Qdrant
(/readyz answering, the GPU seen) is verified by the role itself on real hosts (qdrant_wait_ready).
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

import testhosts
from conftest import REPO, toolkit

MISSING = testhosts.requirements_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

SECRET = "qd-Api-k3y-for-the-leak-test"
READ_ONLY = "qd-Read-0nly-k3y-for-the-leak-test"
HOST_N = 41  # its own subnet and namespace: never one another test module uses
ROLE = REPO / "playbooks/roles/qdrant"
VERSION = yaml.safe_load((ROLE / "defaults/main.yml").read_text())["qdrant_version"]
IMAGE = f"qdrant/qdrant:{VERSION}"
UNIT = "/etc/systemd/system/qdrant.service"
ENV_FILE = "/etc/qdrant/qdrant.env"
TIMINGS: dict[str, float] = {}
RUNS: list[subprocess.CompletedProcess] = []  # every provision run: none may print a key


def provision(state: Path, inventory: Path, *args: str, roles: str = "qdrant", env: dict | None = None):
    """`toolkit provision` with the keys in the environment, as the inventory's lookups read them."""
    proc = toolkit(
        "provision",
        "all",
        "--roles",
        roles,
        "-i",
        str(inventory),
        "--json",
        *args,
        env={
            "TOOLKIT_STATE_DIR": str(state),
            "TOOLKIT_QDRANT_API_KEY": SECRET,
            "TOOLKIT_QDRANT_READ_ONLY_API_KEY": READ_ONLY,
            **(env or {}),
        },
        timeout=900,
    )
    doc = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else None
    RUNS.append(proc)
    return proc, doc


def timed(key: str, fn, *args, **kwargs):
    start = time.monotonic()
    try:
        return fn(*args, **kwargs)
    finally:
        TIMINGS[key] = round(time.monotonic() - start, 1)


def failure(doc: dict, host) -> str:
    return next(f["message"] for f in doc["failures"] if f["host"] == host.name)


def exec_start(host) -> list[str]:
    """ExecStart's argv as systemd parsed it. `systemctl show` joins the arguments with spaces: the role
    renders none with a space in it (asserted in the unit file), so splitting gives them back."""
    shown = host.ssh("systemctl show qdrant.service -p ExecStart --value").stdout
    argv = shown.split("argv[]=", 1)[1].split(" ; ", 1)[0]
    return argv.split(" ")


def env_lookup(name: str) -> str:
    return "{{ lookup('ansible.builtin.env', '" + name + "') }}"


def flag_values(argv: list[str], flag: str) -> list[str]:
    return [a.split("=", 1)[1] for a in argv if a.startswith(flag + "=")]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """A fresh host in qdrant_nodes. The keys come from environment lookups, as in inventory/group_vars.
    The nvidia runtime is registered in daemon.json as nvidia_container_toolkit registers it (that role is
    tested in test_provision.py): here only Docker's knowledge of the runtime matters."""
    base = tmp_path_factory.mktemp("qdrant-role")
    testhosts.build_image()
    lab = testhosts.Lab(base / "lab")
    try:
        host = timed("host_boot_s", lab.start_host, HOST_N)
        inventory = lab.inventory(
            [host],
            {
                "qdrant_api_key": env_lookup("TOOLKIT_QDRANT_API_KEY"),
                "qdrant_read_only_api_key": env_lookup("TOOLKIT_QDRANT_READ_ONLY_API_KEY"),
                # the container cannot run in nspawn: readiness is tested on its own below
                "qdrant_wait_ready": False,
                "docker_daemon_options": {
                    "runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}},
                    "live-restore": True,
                },
            },
            path=lab.dir / "inv-qdrant.yml",
            group="qdrant_nodes",
        )
        yield host, inventory, base / "state"
    finally:
        lab.close()
        print("\nqdrant role timings (s):", json.dumps(TIMINGS))


@pytest.fixture(scope="module")
def converged(node):
    """--check on the fresh host; the docker role; the qdrant role with the image absent (its pull must be
    tried: from a registry on a closed loopback port); the stand-in image imported; the role twice."""
    host, inventory, state = node
    host.ssh("touch /run/toolkit-before-check; sleep 1")
    packages = host.ssh("dpkg-query -W | md5sum").stdout
    check = timed("check_mode_s", provision, state, inventory, "--check", roles="docker,qdrant")
    changed_since = host.ssh(
        "find /etc /usr /var /opt /run -xdev -newer /run/toolkit-before-check "
        "-not -path '/var/log/*' -not -path '/run/systemd/*' -not -path '/var/lib/systemd/*' "
        "-not -path '/run/user/*' -not -path '/run/sshd*' -not -path '/var/cache/*' "
        "-not -name motd.dynamic -type f -print"
    ).stdout.split()
    untouched = not changed_since and host.ssh("dpkg-query -W | md5sum").stdout == packages
    docker = timed("docker_role_s", provision, state, inventory, roles="docker")
    assert docker[0].returncode == 0, docker[0].stderr + docker[0].stdout
    pull = timed(
        "failed_pull_s",
        provision,
        state,
        inventory,
        "-e",
        json.dumps({"qdrant_image_repository": "127.0.0.1:9/qdrant/qdrant"}),
    )
    written_before_image = host.ssh(f"ls {UNIT} {ENV_FILE} /var/lib/qdrant", check=False).returncode == 0
    host.ssh(
        "mkdir -p /tmp/empty && for tag in "
        + " ".join(f"{IMAGE}{suffix}" for suffix in ("-gpu-nvidia", "-gpu-amd", ""))
        + "; do tar -C /tmp/empty -cf - . | docker import --change 'CMD [\"./entrypoint.sh\"]' "
        "--change 'WORKDIR /qdrant' - $tag >/dev/null || exit 1; done"
    )
    first = timed("converge_s", provision, state, inventory)
    second = timed("noop_s", provision, state, inventory)
    return {
        "check": check,
        "untouched": untouched,
        "changed_since": changed_since,
        "pull": pull,
        "written_before_image": written_before_image,
        "first": first,
        "second": second,
    }


def test_check_mode_on_a_fresh_host_changes_nothing(node, converged):
    proc, doc = converged["check"]
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert doc["check"] is True and doc["hosts"][node[0].name]["changed"] > 0
    assert {c["role"] for c in doc["changes"]} == {"docker", "qdrant"}
    assert converged["untouched"], converged["changed_since"]


def test_an_absent_image_is_pulled_and_a_failed_pull_says_so(node, converged):
    host, *_ = node
    proc, doc = converged["pull"]
    assert proc.returncode == 3, proc.stderr + proc.stdout
    message = failure(doc, host)
    assert f"docker pull 127.0.0.1:9/qdrant/qdrant:{VERSION}-gpu-nvidia failed on {host.name}" in message
    assert "connection refused" in message and "docker load" in message
    assert not converged["written_before_image"]  # it stopped before writing anything


def test_converges_then_changes_nothing(node, converged):
    host, *_ = node
    proc, doc = converged["first"]
    assert proc.returncode == 0, proc.stderr + proc.stdout
    stats = doc["hosts"][host.name]
    assert stats["failures"] == 0 and stats["dark"] == 0 and stats["changed"] >= 6
    again, doc2 = converged["second"]
    assert again.returncode == 0, again.stderr + again.stdout
    assert doc2["hosts"][host.name]["changed"] == 0, doc2["changes"]
    assert doc2["hosts"][host.name]["failures"] == 0
    # the image was there: the pull was skipped
    events = [json.loads(p.read_text()) for p in (Path(doc["artifacts"]) / "job_events").glob("*.json")]
    pulls = [
        e["event"] for e in events if (e.get("event_data") or {}).get("task") == "Install | pull the image"
    ]
    assert "runner_on_skipped" in pulls and "runner_on_ok" not in pulls, pulls


def test_unit_runs_docker_with_exactly_the_gpu_flags(node, converged):
    host, *_ = node
    text = host.ssh(f"cat {UNIT}").stdout
    assert '"' not in text.split("ExecStart=", 1)[1].split("ExecStop=", 1)[0]  # no quoted (spaced) argument
    assert exec_start(host) == [
        "/usr/bin/docker",
        "run",
        "--name=qdrant",
        "--rm",
        "--pull=never",
        "--runtime=nvidia",
        "--gpus=all",
        "--env=QDRANT__GPU__INDEXING=1",
        f"--env-file={ENV_FILE}",
        "--volume=/var/lib/qdrant/storage:/qdrant/storage",
        "--volume=/var/lib/qdrant/snapshots:/qdrant/snapshots",
        "--volume=/etc/qdrant/qdrant-healthcheck:/usr/local/bin/qdrant-healthcheck:ro",
        "--publish=127.0.0.1:6333:6333",
        "--publish=127.0.0.1:6334:6334",
        "--health-cmd=/usr/local/bin/qdrant-healthcheck",
        "--health-interval=30s",
        "--health-timeout=5s",
        "--health-retries=3",
        "--health-start-period=60s",
        f"{IMAGE}-gpu-nvidia",
    ]
    shown = host.ssh(
        "systemctl show qdrant.service -p Restart -p RestartUSec -p Requires -p After -p Type "
        "-p UnitFileState -p ExecStartPre -p ExecStop"
    ).stdout
    assert "Restart=always" in shown and "RestartUSec=10s" in shown and "Type=exec" in shown
    props = dict(line.split("=", 1) for line in shown.splitlines() if line and not line.startswith("Exec"))
    assert "docker.service" in props["Requires"].split() and "docker.service" in props["After"].split()
    assert "UnitFileState=enabled" in shown
    assert "argv[]=/usr/bin/docker rm --force qdrant" in shown
    assert "argv[]=/usr/bin/docker stop --time=60 qdrant" in shown
    # started: the container cannot run in nspawn, so systemd is restarting it (not given up on it)
    state = host.ssh("systemctl show qdrant.service -p ActiveState -p SubState").stdout
    assert "ActiveState=active" in state or "SubState=auto-restart" in state, state
    for folder in ("/var/lib/qdrant/storage", "/var/lib/qdrant/snapshots", "/etc/qdrant"):
        assert host.ssh(f"stat -c '%a %U' {folder}").stdout.split() == ["750", "root"]


def test_api_key_is_only_in_the_private_env_file(node, converged):
    host, _, state = node
    assert host.ssh(f"stat -c '%a %U %G' {ENV_FILE}").stdout.split() == ["600", "root", "root"]
    lines = host.ssh(f"cat {ENV_FILE}").stdout.splitlines()
    assert f"QDRANT__SERVICE__API_KEY={SECRET}" in lines
    assert f"QDRANT__SERVICE__READ_ONLY_API_KEY={READ_ONLY}" in lines
    # the whole file system but /proc, /sys and /dev: only the env file, and Docker's own (root-only)
    # record of a container the unit is (re)starting, may hold the key; none of them world-readable
    roots = [
        d for d in host.ssh("ls -d /*/").stdout.split() if d.rstrip("/") not in ("/proc", "/sys", "/dev")
    ]
    for secret in (SECRET, READ_ONLY):
        holders = host.ssh(f"grep -rlsaF -- '{secret}' {' '.join(roots)} || true", timeout=300).stdout.split()
        assert ENV_FILE in holders
        assert all(h == ENV_FILE or h.startswith("/var/lib/docker/") for h in holders), holders
        # a record of a container Docker is restarting can be gone by now: what still exists is checked
        modes = host.ssh("stat -c '%a %n' " + " ".join(holders) + " 2>/dev/null || true").stdout.splitlines()
        assert any(line.endswith(f" {ENV_FILE}") for line in modes), modes
        assert all(int(line.split()[0], 8) & 0o004 == 0 for line in modes), modes
    shown = host.ssh("systemctl show qdrant.service; systemctl cat qdrant.service").stdout
    assert SECRET not in shown and READ_ONLY not in shown
    for proc in RUNS:
        assert SECRET not in proc.stdout + proc.stderr and READ_ONLY not in proc.stdout + proc.stderr
    leaked = [p for p in state.rglob("*") if p.is_file() and SECRET in p.read_text(errors="replace")]
    assert not leaked, leaked


def test_docker_accepts_the_container_definition(node, converged):
    """The unit's argv given to `docker create` (all of it but the verb and the name): what Docker makes of
    each flag, the key taken from the env file into the container's environment."""
    host, *_ = node
    argv = exec_start(host)
    assert argv[1:3] == ["run", "--name=qdrant"]
    create = [argv[0], "create", "--name=qdrant-definition-test", *argv[3:]]
    host.ssh(" ".join(create))
    try:
        inspect = json.loads(host.ssh("docker inspect qdrant-definition-test").stdout)[0]
    finally:
        host.ssh("docker rm --force qdrant-definition-test")
    hc, config = inspect["HostConfig"], inspect["Config"]
    assert hc["Runtime"] == "nvidia" and hc["AutoRemove"] is True
    assert hc["DeviceRequests"] == [
        {"Driver": "", "Count": -1, "DeviceIDs": None, "Capabilities": [["gpu"]], "Options": {}}
    ]
    assert hc["PortBindings"] == {
        "6333/tcp": [{"HostIp": "127.0.0.1", "HostPort": "6333"}],
        "6334/tcp": [{"HostIp": "127.0.0.1", "HostPort": "6334"}],
    }
    assert sorted(hc["Binds"]) == [
        "/etc/qdrant/qdrant-healthcheck:/usr/local/bin/qdrant-healthcheck:ro",
        "/var/lib/qdrant/snapshots:/qdrant/snapshots",
        "/var/lib/qdrant/storage:/qdrant/storage",
    ]
    assert hc["RestartPolicy"]["Name"] == "no"  # systemd restarts it
    assert "QDRANT__GPU__INDEXING=1" in config["Env"]
    assert f"QDRANT__SERVICE__API_KEY={SECRET}" in config["Env"]
    assert config["Healthcheck"]["Test"] == ["CMD-SHELL", "/usr/local/bin/qdrant-healthcheck"]
    assert config["Healthcheck"]["Retries"] == 3
    assert config["Image"] == f"{IMAGE}-gpu-nvidia"


class _Readyz(http.server.BaseHTTPRequestHandler):
    """Answers GET /readyz like a Qdrant with an API key: 200 with the key, 401 without."""

    status_without_key = 401

    def do_GET(self):
        ok = self.path == "/readyz" and self.headers.get("api-key") == SECRET
        self.send_response(200 if ok else self.status_without_key)
        self.send_header("Content-Length", "0")  # the probe reads the status line and hangs up
        self.end_headers()

    def log_message(self, *args):
        pass


def test_health_check_script_reads_readyz(node, converged):
    """The script the unit mounts into the container, as deployed, run by bash against an HTTP server:
    healthy only on a 200 from /readyz; the key from the environment, as the container has it."""
    host, *_ = node
    deployed = host.ssh("cat /etc/qdrant/qdrant-healthcheck").stdout
    assert deployed == (ROLE / "files/qdrant-healthcheck").read_text()
    assert host.ssh("stat -c %a /etc/qdrant/qdrant-healthcheck").stdout.strip() == "755"
    script = ROLE / "files/qdrant-healthcheck"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Readyz)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]

    def probe(key: str | None, port: int = port) -> subprocess.CompletedProcess:
        env = {"PATH": os.environ["PATH"], "QDRANT__SERVICE__HTTP_PORT": str(port)}
        if key is not None:
            env["QDRANT__SERVICE__API_KEY"] = key
        return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=10)

    try:
        assert probe(SECRET).returncode == 0
        refused = probe(None)
        assert refused.returncode == 1 and "401" in refused.stdout
        assert probe("wrong").returncode == 1
        _Readyz.status_without_key = 503  # not ready yet
        assert probe(None).returncode == 1
    finally:
        server.shutdown()
        server.server_close()
    assert probe(SECRET).returncode == 1  # nothing listens any more


def test_amd_and_cpu_variants(node, converged):
    host, inventory, state = node
    amd, doc = timed("amd_variant_s", provision, state, inventory, "-e", "qdrant_image_variant=gpu-amd")
    assert amd.returncode == 0, amd.stderr + amd.stdout
    assert doc["hosts"][host.name]["changed"] >= 1
    argv = exec_start(host)
    assert flag_values(argv, "--device") == ["/dev/kfd", "/dev/dri"]
    assert flag_values(argv, "--env") == ["QDRANT__GPU__INDEXING=1"]
    assert not flag_values(argv, "--gpus") and not flag_values(argv, "--runtime")
    assert argv[-1] == f"{IMAGE}-gpu-amd"

    cpu_vars = {"qdrant_image_variant": "cpu", "qdrant_bind_address": "0.0.0.0", "qdrant_http_port": 16333}
    cpu, doc = timed("cpu_variant_s", provision, state, inventory, "-e", json.dumps(cpu_vars))
    assert cpu.returncode == 0, cpu.stderr + cpu.stdout
    argv = exec_start(host)
    for flag in ("--device", "--gpus", "--runtime", "--env"):
        assert not flag_values(argv, flag), (flag, argv)
    assert flag_values(argv, "--publish") == ["0.0.0.0:16333:6333", "0.0.0.0:6334:6334"]
    assert flag_values(argv, "--env-file") == [ENV_FILE]
    assert argv[-1] == IMAGE


def test_a_missing_nvidia_runtime_fails_clearly(node, converged):
    host, inventory, state = node
    proc, doc = provision(state, inventory, "-e", "qdrant_nvidia_runtime=nvidia-absent")
    assert proc.returncode == 3
    message = failure(doc, host)
    assert "has no 'nvidia-absent' runtime" in message and "nvidia_container_toolkit" in message
    assert "nvidia" in message.split("(it has", 1)[1]  # what Docker does have


def test_a_missing_api_key_fails_clearly(node, converged):
    host, inventory, state = node
    before = host.ssh(f"md5sum {ENV_FILE} {UNIT}").stdout
    proc, doc = provision(state, inventory, env={"TOOLKIT_QDRANT_API_KEY": ""})
    assert proc.returncode == 3
    message = failure(doc, host)
    assert "qdrant_api_key is empty for node41" in message and "TOOLKIT_QDRANT_API_KEY" in message
    assert "qdrant_allow_no_api_key" in message
    assert host.ssh(f"md5sum {ENV_FILE} {UNIT}").stdout == before  # nothing written


def test_running_without_a_key_is_an_explicit_choice(node, converged):
    host, inventory, state = node
    proc, _ = provision(
        state, inventory, "-e", "qdrant_allow_no_api_key=true", env={"TOOLKIT_QDRANT_API_KEY": ""}
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    lines = host.ssh(f"cat {ENV_FILE}").stdout.splitlines()
    assert not any(line.startswith("QDRANT__SERVICE__API_KEY=") for line in lines)
    assert f"QDRANT__SERVICE__READ_ONLY_API_KEY={READ_ONLY}" in lines


def test_readiness_wait_fails_when_qdrant_does_not_answer(node, converged):
    """On real hosts the role waits for /readyz. Here the container cannot run: the wait must fail, and
    say where to look, rather than pass."""
    host, inventory, state = node
    ready = {"qdrant_wait_ready": True, "qdrant_ready_timeout": 5}
    proc, doc = timed("readiness_failure_s", provision, state, inventory, "-e", json.dumps(ready))
    assert proc.returncode == 3, proc.stderr + proc.stdout
    message = failure(doc, host)
    assert "did not answer GET http://127.0.0.1:6333/readyz with 200 within 5 s" in message
    assert "journalctl -u qdrant.service" in message
    assert SECRET not in proc.stdout + proc.stderr
