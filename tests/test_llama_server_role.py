"""The `llama_server` role on a real test host (Debian booted with systemd-nspawn, over SSH): llama.cpp's own
`llama-server` (the binary scripts/build_llama_server.sh builds and caches here) copied from the controller,
with the runtime libraries it links to installed by apt, a tiny GGUF model built here and copied by the role
(`llama_server_model_src`), a system user, a hardened unit, the API key only in a 0600 file read with
--api-key-file, and the readiness wait on GET /health.

Everything is observed on the host itself: the unit's state and properties as systemd parsed them, the
listening sockets, HTTP answers from inside the host (python3 there, the key on stdin), the key's absence
from the unit, `ps`, the journal and the provision output.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest
from llama_server import BUILD_HINT, build_tiny_llama, llama_server_binary

import testhosts
from conftest import toolkit

MISSING = testhosts.requirements_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

SECRET = "ls-Api-k3y-for-the-leak-test"
HOST_N = 45  # its own subnet and namespace: never one another test module uses
PORT = 18080
MODEL = "/srv/models/tiny-q8_0.gguf"
UNIT = "/etc/systemd/system/llama-server.service"
KEY_FILE = "/etc/llama-server/api-key"
TIMINGS: dict[str, float] = {}
RUNS: list[subprocess.CompletedProcess] = []  # every provision run: none may print the key

# Runs on the host: GET each path on 127.0.0.1:PORT, the key (if any) read from stdin, never from argv.
PROBE = """
import json, sys, urllib.error, urllib.request
key = sys.stdin.read().strip()
out = {}
for path in sys.argv[2:]:
    headers = {"Authorization": "Bearer " + key} if key else {}
    request = urllib.request.Request("http://127.0.0.1:" + sys.argv[1] + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            out[path] = [answer.status, answer.read().decode(errors="replace")]
    except urllib.error.HTTPError as error:
        out[path] = [error.code, error.read().decode(errors="replace")]
print(json.dumps(out))
"""


def provision(state: Path, inventory: Path, *args: str, env: dict | None = None):
    """`toolkit provision --roles llama_server` with the key in the environment, as the inventory reads it."""
    proc = toolkit(
        "provision",
        "all",
        "--roles",
        "llama_server",
        "-i",
        str(inventory),
        "--json",
        *args,
        env={"TOOLKIT_STATE_DIR": str(state), "TOOLKIT_LLAMA_SERVER_API_KEY": SECRET, **(env or {})},
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


def get(host, *paths: str, key: str = "") -> dict[str, tuple[int, str]]:
    """{path: (status, body)} of GET requests made inside the host."""
    proc = testhosts.run(
        [*host.ssh_args(), f"python3 /root/probe.py {PORT} {' '.join(paths)}"], input=key, timeout=120
    )
    return {path: tuple(answer) for path, answer in json.loads(proc.stdout).items()}


def props(host, *names: str) -> dict[str, str]:
    shown = host.ssh("systemctl show llama-server.service " + " ".join(f"-p {n}" for n in names)).stdout
    return dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)


@pytest.fixture(scope="module")
def binary():
    found = llama_server_binary()
    if found is None:
        pytest.skip(f"llama-server not built: {BUILD_HINT}")
    return found


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    """A tiny Llama (tests/llama_server.py; barely trained: only loading and listing matter here) converted
    to q8_0 with llama.cpp's own converter, as `toolkit bench --adapter` converts."""
    from toolkit.bench import gguf_export

    folder = tmp_path_factory.mktemp("llama-server-model")
    base, _ = build_tiny_llama(folder, steps=1, base_steps=1)
    return gguf_export.convert(base, gguf_export.find_converter(None), folder / "gguf", ["q8_0"])["q8_0"]


@pytest.fixture(scope="module")
def node(tmp_path_factory, binary, gguf):
    """A fresh host in llama_server_nodes; the key comes from an environment lookup, as in
    inventory/group_vars/llama_server_nodes.yml."""
    base = tmp_path_factory.mktemp("llama-server-role")
    testhosts.build_image()
    lab = testhosts.Lab(base / "lab")
    try:
        host = timed("host_boot_s", lab.start_host, HOST_N)
        # The cached image's / is 0700 (debootstrap ran in a mkdtemp folder): no user but root could run
        # anything. A real host's / is 0755, and the service runs as its own user.
        host.ssh("chmod 0755 /")
        testhosts.run([*host.ssh_args(), "cat > /root/probe.py"], input=PROBE)
        inventory = lab.inventory(
            [host],
            {
                "llama_server_binary_src": str(binary),
                "llama_server_model": MODEL,
                "llama_server_model_src": str(gguf),
                "llama_server_alias": "tiny",
                "llama_server_port": PORT,
                "llama_server_ctx_size": 512,
                "llama_server_extra_args": ["--threads", "1", "--no-warmup"],
                "llama_server_api_key": "{{ lookup('ansible.builtin.env', 'TOOLKIT_LLAMA_SERVER_API_KEY') }}",
                "llama_server_ready_timeout": 120,
            },
            path=lab.dir / "inv-llama-server.yml",
            group="llama_server_nodes",
        )
        yield host, inventory, base / "state"
    finally:
        lab.close()
        print("\nllama_server role timings (s):", json.dumps(TIMINGS))


@pytest.fixture(scope="module")
def converged(node):
    host, inventory, state = node
    check = timed("check_mode_s", provision, state, inventory, "--check")
    written = host.ssh(f"ls /usr/local/bin/llama-server {UNIT} {MODEL} /etc/llama-server", check=False)
    user = host.ssh("getent passwd llama-server", check=False).returncode == 0
    first = timed("converge_s", provision, state, inventory)
    second = timed("noop_s", provision, state, inventory)
    written_in_check = written.stdout.split() or user
    return {"check": check, "written_in_check": written_in_check, "first": first, "second": second}


def test_check_mode_on_a_fresh_host_changes_nothing(node, converged):
    host, *_ = node
    proc, doc = converged["check"]
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert doc["check"] is True and doc["hosts"][host.name]["changed"] > 0
    assert not converged["written_in_check"]


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


def test_binary_model_and_runtime_libraries_on_the_host(node, converged, binary, gguf):
    host, *_ = node
    assert host.ssh("stat -c '%a %U' /usr/local/bin/llama-server").stdout.split() == ["755", "root"]
    sums = host.ssh(f"sha256sum /usr/local/bin/llama-server {MODEL}").stdout.split()[::2]
    expected = subprocess.run(["sha256sum", binary, gguf], capture_output=True, text=True, check=True)
    assert sums == expected.stdout.split()[::2]
    installed = host.ssh("dpkg-query -W -f='${db:Status-Abbrev} ${Package}\\n' libgomp1 libstdc++6").stdout
    assert installed.split() == ["ii", "libgomp1", "ii", "libstdc++6"]
    assert "not found" not in host.ssh("ldd /usr/local/bin/llama-server").stdout
    user = host.ssh("getent passwd llama-server").stdout.strip().split(":")
    assert user[5:] == ["/var/lib/llama-server", "/usr/sbin/nologin"] and int(user[2]) < 1000
    groups = host.ssh("id -nG llama-server").stdout.split()
    assert {"llama-server", "video", "render"} <= set(groups)


def test_unit_is_active_hardened_and_runs_the_configured_server(node, converged):
    host, *_ = node
    p = props(
        host, "ActiveState", "SubState", "UnitFileState", "User", "Restart", "NoNewPrivileges",
        "ProtectSystem", "ProtectHome", "PrivateTmp", "ReadOnlyPaths", "PrivateDevices", "DevicePolicy",
        "DeviceAllow", "StateDirectory", "ExecStart", "MainPID",
    )  # fmt: skip
    assert (p["ActiveState"], p["SubState"], p["UnitFileState"]) == ("active", "running", "enabled")
    assert p["User"] == "llama-server" and p["Restart"] == "on-failure"
    assert p["NoNewPrivileges"] == "yes" and p["ProtectSystem"] == "strict" and p["ProtectHome"] == "yes"
    assert p["PrivateTmp"] == "yes" and p["ReadOnlyPaths"] == MODEL
    # GPU device nodes stay reachable: no private /dev, no device allow-list
    assert p["PrivateDevices"] == "no" and p["DevicePolicy"] == "auto" and not p.get("DeviceAllow")
    assert p["StateDirectory"] == "llama-server"
    argv = p["ExecStart"].split("argv[]=", 1)[1].split(" ; ", 1)[0].split(" ")
    assert argv == [
        "/usr/local/bin/llama-server", "--model", MODEL, "--host", "127.0.0.1", "--port", str(PORT),
        "--ctx-size", "512", "--n-gpu-layers", "0", "--parallel", "1", "--metrics", "--slots",
        "--alias", "tiny", "--api-key-file", KEY_FILE, "--threads", "1", "--no-warmup",
    ]  # fmt: skip
    owner = host.ssh(f"ps -o user= -p {p['MainPID']}").stdout.strip()
    assert owner == "llama-server"


def test_listens_only_on_loopback_inside_the_host(node, converged):
    host, *_ = node
    sockets = host.ssh("ss -Htlnp").stdout.splitlines()
    served = [line.split()[3] for line in sockets if '"llama-server"' in line]
    assert served == [f"127.0.0.1:{PORT}"], sockets
    with socket.socket() as s:  # the host's own address, from outside its namespace: nothing answers
        s.settimeout(5)
        assert s.connect_ex((host.ip, PORT)) != 0


def test_answers_inside_the_host_and_enforces_the_key(node, converged):
    host, *_ = node
    paths = ("/health", "/v1/models", "/slots", "/metrics")
    open_ = get(host, *paths)
    assert open_["/health"][0] == 200 and json.loads(open_["/health"][1])["status"] == "ok"
    for path in paths[1:]:
        assert open_[path][0] == 401, (path, open_[path])
    wrong = get(host, "/v1/models", key="not-the-key")
    assert wrong["/v1/models"][0] == 401
    keyed = get(host, *paths, key=SECRET)
    assert all(keyed[path][0] == 200 for path in paths), keyed
    models = json.loads(keyed["/v1/models"][1])
    assert [m["id"] for m in models["data"]] == ["tiny"]
    assert len(json.loads(keyed["/slots"][1])) == 1
    assert "llamacpp:prompt_tokens_total" in keyed["/metrics"][1]


def test_api_key_is_only_in_the_private_key_file(node, converged):
    host, _, state = node
    owner = ["600", "llama-server", "llama-server"]
    assert host.ssh(f"stat -c '%a %U %G' {KEY_FILE}").stdout.split() == owner
    assert host.ssh(f"cat {KEY_FILE}").stdout == SECRET + "\n"
    exposed = host.ssh(
        "systemctl show llama-server.service; systemctl cat llama-server.service; ps -eo args; "
        "journalctl --no-pager -o verbose; cat /proc/*/cmdline 2>/dev/null | tr '\\0' ' '"
    ).stdout
    assert "--api-key-file" in exposed and SECRET not in exposed
    assert host.ssh(f"grep -v '^#' {UNIT} | grep -c -- --api-key-file").stdout.strip() == "1"
    for proc in RUNS:
        assert SECRET not in proc.stdout + proc.stderr
    leaked = [p for p in state.rglob("*") if p.is_file() and SECRET in p.read_text(errors="replace")]
    assert not leaked, leaked


def test_a_changed_setting_restarts_the_server(node, converged):
    """A new --parallel reaches the running server only through the handler's restart."""
    host, inventory, state = node
    before = props(host, "MainPID")["MainPID"]
    proc, _ = timed("restart_s", provision, state, inventory, "-e", "llama_server_parallel=2")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert props(host, "MainPID")["MainPID"] != before
    assert len(json.loads(get(host, "/slots", key=SECRET)["/slots"][1])) == 2


def test_a_missing_model_fails_clearly(node, converged):
    host, inventory, state = node
    before = host.ssh(f"md5sum {UNIT}").stdout
    absent = {"llama_server_model": "/srv/models/absent.gguf", "llama_server_model_src": ""}
    proc, doc = provision(state, inventory, "-e", json.dumps(absent))
    assert proc.returncode == 3
    message = failure(doc, host)
    assert f"llama_server_model /srv/models/absent.gguf does not exist on {host.name}" in message
    assert "llama_server_model_src" in message
    assert host.ssh(f"md5sum {UNIT}").stdout == before  # the unit was not rewritten


def test_a_server_that_does_not_come_up_fails_with_its_journal(node, converged):
    """A file that starts like a GGUF but is not one passes the role's probe; llama-server then cannot load
    it, and the readiness wait fails quoting llama-server's own last lines."""
    host, inventory, state = node
    host.ssh("printf 'GGUF-not-really-a-model' > /srv/models/broken.gguf; chmod 0644 /srv/models/broken.gguf")
    broken = {
        "llama_server_model": "/srv/models/broken.gguf",
        "llama_server_model_src": "",
        "llama_server_ready_timeout": 10,
    }
    proc, doc = timed("readiness_failure_s", provision, state, inventory, "-e", json.dumps(broken))
    assert proc.returncode == 3, proc.stderr + proc.stdout
    message = failure(doc, host)
    assert f"did not answer GET http://127.0.0.1:{PORT}/health with 200 within 10 s" in message
    assert "journalctl -u llama-server.service" in message
    assert "broken.gguf" in message.split("journalctl -u llama-server.service", 1)[1]  # llama-server's words
    assert SECRET not in proc.stdout + proc.stderr
