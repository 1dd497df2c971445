"""`toolkit provision` against real test hosts: Debian booted with systemd-nspawn, over SSH.

Vendor repositories are local signed stub repositories (tests/vendor_repo.py); Debian packages
(docker.io, systemd-timesyncd ...) are the real ones from the machine's own Debian mirror.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from toolkit.commands.provision import CAPABILITIES

import testhosts
import vendor_repo
from conftest import REPO, toolkit

VENDOR = f"http://127.0.0.1:{testhosts.VENDOR_PORT}"
SECRET = "s3cret-bmc-password-for-the-leak-test"


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    missing = testhosts.requirements_missing()
    if missing:
        pytest.skip(missing)
    base = tmp_path_factory.mktemp("lab")
    vendor = vendor_repo.build(base / "vendor")
    testhosts.build_image()
    lab = testhosts.Lab(base / "hosts", vendor_root=vendor)
    yield lab
    lab.close()


@pytest.fixture(scope="session")
def state(tmp_path_factory):
    return tmp_path_factory.mktemp("state")


def provision(lab, state, inventory, *args, env=None):
    proc = toolkit(
        "provision",
        *args,
        "-i",
        str(inventory),
        "--json",
        env={"TOOLKIT_STATE_DIR": str(state), "TOOLKIT_BMC_PASSWORD": SECRET, **(env or {})},
        timeout=900,
    )
    doc = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else None
    return proc, doc


@pytest.fixture(scope="module")
def converged(lab, state):
    """One host, site.yml twice."""
    host = lab.start_host(1)
    inventory = lab.inventory([host], vendor_repo.vendor_vars(VENDOR), path=lab.dir / "inv-converge.yml")
    first = provision(lab, state, inventory, "all")
    second = provision(lab, state, inventory, "all")
    yield host, first, second
    lab.stop_host(1)


def test_first_run_succeeds_on_every_host(converged):
    host, (proc, doc), _ = converged
    assert proc.returncode == 0, proc.stderr + proc.stdout
    stats = doc["hosts"][host.name]
    assert stats["failures"] == 0 and stats["dark"] == 0 and stats["changed"] > 10
    assert doc["failed_hosts"] == [] and doc["status"] == "ok"


def test_second_run_changes_nothing(converged):
    host, (first, _), (proc, doc) = converged
    assert first.returncode == 0  # idempotency means something only after a clean first run
    assert proc.returncode == 0, proc.stderr
    assert doc["hosts"][host.name]["changed"] == 0, doc
    assert doc["hosts"][host.name]["failures"] == 0


def test_pinned_versions_are_installed(converged):
    host, *_ = converged
    out = host.ssh(
        "dpkg-query -W -f='${Package}=${Version}\\n' cuda-drivers-580 nvidia-persistenced "
        "cuda-toolkit-13-0 nvidia-container-toolkit libnvidia-container1 docker.io systemd-timesyncd"
    )
    installed = dict(line.split("=", 1) for line in out.stdout.split())
    # the stub repositories also hold newer releases (580.105.08, 1.18.0): the pins must win
    assert installed["cuda-drivers-580"] == vendor_repo.DRIVER
    assert installed["nvidia-persistenced"] == vendor_repo.DRIVER
    assert installed["cuda-toolkit-13-0"] == vendor_repo.CUDA_TOOLKIT
    assert installed["nvidia-container-toolkit"] == installed["libnvidia-container1"] == vendor_repo.NCT
    assert "docker.io" in installed and "systemd-timesyncd" in installed
    pin = host.ssh("cat /etc/apt/preferences.d/toolkit-nvidia-driver").stdout
    assert "Pin: version 580.95.05*" in pin and "libnvidia-container" not in pin
    # an upgrade keeps the pins (the repositories hold 580.105.08 and 1.18.0)
    upgrade = host.ssh("apt-get -s -o Debug::NoLocking=1 upgrade").stdout
    assert "580.105.08" not in upgrade and "1.18.0" not in upgrade
    assert (
        "Pin: version 1.17.8-1"
        in host.ssh("cat /etc/apt/preferences.d/toolkit-nvidia-container-toolkit").stdout
    )


def test_vendor_sources_are_deb822_with_signed_by(converged):
    host, *_ = converged
    cuda = host.ssh("cat /etc/apt/sources.list.d/cuda.sources").stdout
    assert f"URIs: {VENDOR}/cuda/repos/debian12/x86_64/" in cuda
    assert "Signed-By: /etc/apt/keyrings/cuda.asc" in cuda and "Suites: /" in cuda
    assert "BEGIN PGP PUBLIC KEY BLOCK" in host.ssh("cat /etc/apt/keyrings/cuda.asc").stdout


def test_docker_runs_with_the_nvidia_runtime(converged):
    host, *_ = converged
    config = json.loads(host.ssh("cat /etc/docker/daemon.json").stdout)
    assert config["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"
    assert config["log-opts"]["max-size"] == "100m" and config["live-restore"] is True
    runtimes = json.loads(host.ssh("docker info --format '{{json .Runtimes}}'").stdout)
    assert "nvidia" in runtimes
    # nvidia-ctk ran once, on the first run only (the second found the runtime registered); no driver is
    # loaded in a test host, so the /dev/char links are left to the udev rule
    calls = host.ssh("cat /var/log/toolkit-stub-nvidia-ctk.log").stdout.splitlines()
    assert calls == ["runtime configure --runtime=docker"]
    rule = host.ssh("cat /etc/udev/rules.d/71-nvidia-dev-char.rules").stdout
    [active] = [line for line in rule.splitlines() if line and not line.startswith("#")]
    assert active == (
        'ACTION=="add", DEVPATH=="/bus/pci/drivers/nvidia", '
        'RUN+="/usr/bin/nvidia-ctk system create-dev-char-symlinks --create-all"'
    )


def test_services_enabled_and_running(converged):
    host, *_ = converged
    for unit in ("docker", "nvidia-persistenced", "systemd-timesyncd"):
        assert host.ssh(f"systemctl is-enabled {unit}").stdout.strip() == "enabled"
    assert host.ssh("systemctl is-active docker").stdout.strip() == "active"
    # no NVIDIA kernel driver is loaded in a test host: persistenced waits for the reboot
    assert host.ssh("systemctl is-active nvidia-persistenced", check=False).stdout.strip() == "inactive"


def test_persistence_mode_is_on_whatever_the_packaged_unit_says(converged):
    """The packaged unit here is Ubuntu's (static, StopWhenUnneeded, --no-persistence-mode): the unit
    systemd runs is the role's, with persistence mode on, and it starts and stays up."""
    host, *_ = converged
    unit = host.ssh("systemctl cat nvidia-persistenced").stdout
    assert unit.startswith("# /etc/systemd/system/nvidia-persistenced.service")  # the role's, alone
    settings = [line for line in unit.splitlines() if line and not line.startswith("#")]
    [start] = [line for line in settings if line.startswith("ExecStart=")]
    assert "--persistence-mode" in start and "--no-persistence-mode" not in start
    assert not [line for line in settings if line.startswith("StopWhenUnneeded")]
    exec_start = host.ssh("systemctl show -p ExecStart --value nvidia-persistenced").stdout
    assert "--persistence-mode --verbose" in exec_start and "--no-persistence-mode" not in exec_start
    # as after the reboot with the driver loaded: the daemon starts with persistence on and stays up
    host.ssh("systemctl start nvidia-persistenced && sleep 2")
    try:
        assert host.ssh("systemctl is-active nvidia-persistenced", check=False).stdout.strip() == "active"
        calls = host.ssh("cat /var/log/toolkit-stub-calls.log").stdout.splitlines()
        assert "nvidia-persistenced --persistence-mode --verbose" in calls
    finally:
        host.ssh("systemctl stop nvidia-persistenced", check=False)


def test_kernel_command_line_and_reboot_marker(converged):
    host, (_, first), (_, second) = converged
    dropin = host.ssh("cat /etc/default/grub.d/90-toolkit.cfg").stdout
    wanted = "modprobe.blacklist=nouveau nouveau.modeset=0"
    assert f'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT {wanted}"' in dropin
    assert "blacklist nouveau" in host.ssh("cat /etc/modprobe.d/toolkit-blacklist-nouveau.conf").stdout
    assert "restart required" in host.ssh("cat /var/run/reboot-required").stdout
    assert first["reboot_required"] == [host.name] and second["reboot_required"] == [host.name]


def test_cuda_on_path_for_login_shells_and_toolkit_user(converged):
    host, *_ = converged
    assert host.ssh("bash -lc 'command -v nvcc'").stdout.strip() == "/usr/local/cuda-13.0/bin/nvcc"
    assert host.ssh("getent passwd toolkit").stdout.split(":")[6].strip() == "/usr/sbin/nologin"


def test_secrets_stay_out_of_outputs_and_artifacts(converged, state):
    _, (first, doc), (second, _) = converged
    for text in (first.stdout, first.stderr, second.stdout, second.stderr):
        assert SECRET not in text
    artifacts = Path(doc["artifacts"])
    assert artifacts.is_dir() and str(state) in str(artifacts)
    assert artifacts.stat().st_mode & 0o077 == 0  # private: job events hold task results
    leaked = [p for p in artifacts.rglob("*") if p.is_file() and SECRET in p.read_text(errors="replace")]
    assert not leaked, leaked


def test_check_mode_on_a_converged_host_reports_nothing_to_change(converged, lab, state):
    host, *_ = converged
    inventory = lab.dir / "inv-converge.yml"
    proc, doc = provision(lab, state, inventory, "all", "--check", "--diff")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert doc["hosts"][host.name]["changed"] == 0, doc["changes"]


def test_unreachable_host_does_not_stop_the_others(lab, state):
    hosts = [lab.start_host(n) for n in (2, 3, 4)]
    lab.stop_host(4)
    inventory = lab.inventory(hosts, vendor_repo.vendor_vars(VENDOR), path=lab.dir / "inv-three.yml")
    proc, doc = provision(lab, state, inventory, "all")
    assert proc.returncode == 3, proc.stderr
    assert doc["failed_hosts"] == ["node4"]
    assert doc["hosts"]["node4"]["dark"] >= 1
    for name in ("node2", "node3"):
        assert doc["hosts"][name]["failures"] == 0 and doc["hosts"][name]["changed"] > 0
    assert any(f["host"] == "node4" and f["unreachable"] for f in doc["failures"])
    table = toolkit(
        "provision",
        "all",
        "-i",
        str(inventory),
        "--roles",
        "grub",
        env={"TOOLKIT_STATE_DIR": str(state)},
        timeout=600,
    )
    assert table.returncode == 3
    assert "unreachable node4" in table.stdout and "node2" in table.stdout


def test_wrong_vendor_key_fails_closed(lab, state):
    host = lab.start_host(7)  # fresh: nothing from NVIDIA's repository installed yet
    inventory = lab.inventory(
        [host],
        {**vendor_repo.vendor_vars(VENDOR), "nvidia_container_toolkit_key_url": f"{VENDOR}/wrong-key.asc"},
        path=lab.dir / "inv-wrong-key.yml",
    )
    proc, doc = provision(lab, state, inventory, "all", "--roles", "nvidia_container_toolkit")
    assert proc.returncode == 3
    failure = next(f for f in doc["failures"] if f["host"] == host.name)
    assert (
        "NO_PUBKEY" in failure["message"]
        or "not signed" in failure["message"]
        or "signature" in failure["message"].lower()
    ), failure
    assert host.ssh("dpkg-query -W nvidia-container-toolkit", check=False).returncode != 0
    lab.stop_host(7)


def test_rocm_role_installs_the_pinned_release(lab, state):
    host = lab.hosts.get(3) or lab.start_host(3)
    inventory = lab.inventory(
        [host], vendor_repo.vendor_vars(VENDOR), path=lab.dir / "inv-rocm.yml", group="amd_nodes"
    )
    proc, _ = provision(
        lab, state, inventory, "all", "--roles", "common,rocm", "-e", json.dumps({"rocm_users": ["toolkit"]})
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    out = host.ssh("dpkg-query -W -f='${Package}=${Version}\\n' rocm rocm-core amdgpu-dkms").stdout
    installed = dict(line.split("=", 1) for line in out.split())
    assert installed["rocm"] == vendor_repo.ROCM and installed["amdgpu-dkms"] == vendor_repo.AMDGPU_DKMS
    assert (
        "Pin: release o=repo.radeon.com" in host.ssh("cat /etc/apt/preferences.d/toolkit-rocm-pin-600").stdout
    )
    groups = host.ssh("id -nG toolkit").stdout.split()
    assert "render" in groups and "video" in groups
    again, doc2 = provision(
        lab, state, inventory, "all", "--roles", "common,rocm", "-e", json.dumps({"rocm_users": ["toolkit"]})
    )
    assert again.returncode == 0 and doc2["hosts"][host.name]["changed"] == 0


def test_check_mode_changes_nothing_on_a_fresh_host(lab, state):
    host = lab.start_host(5)
    host.ssh("touch /run/toolkit-before-check; sleep 1")
    changed_since = (
        "find /etc /usr /var /opt /run -xdev -newer /run/toolkit-before-check "
        "-not -path '/var/log/*' -not -path '/run/systemd/*' -not -path '/var/lib/systemd/*' "
        "-not -path '/run/user/*' -not -path '/run/sshd*' -not -path '/var/cache/*' "
        "-not -name motd.dynamic -type f -print | sort"  # motd.dynamic: written by each SSH login
    )
    packages = "dpkg-query -W | md5sum"
    before = host.ssh(packages).stdout
    inventory = lab.inventory([host], vendor_repo.vendor_vars(VENDOR), path=lab.dir / "inv-check.yml")
    proc, doc = provision(lab, state, inventory, "all", "--check")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert doc["check"] is True and doc["hosts"][host.name]["changed"] > 0  # it says what would change
    assert {c["role"] for c in doc["changes"]} >= {"common", "grub", "docker"}
    assert host.ssh(packages).stdout == before
    assert host.ssh(changed_since).stdout.split() == []
    assert (
        host.ssh(
            "test -e /etc/docker/daemon.json || test -e /etc/apt/sources.list.d/cuda.sources "
            "|| getent passwd toolkit",
            check=False,
        ).returncode
        != 0
    )
    lab.stop_host(5)


def test_argument_specs_reject_a_wrong_type(lab, state):
    host = lab.hosts.get(2) or lab.start_host(2)
    inventory = lab.inventory([host], path=lab.dir / "inv-argspec.yml")
    proc, doc = provision(
        lab, state, inventory, "all", "--roles", "docker", "-e", "docker_daemon_options=loud"
    )
    assert proc.returncode == 3
    message = next(f["message"] for f in doc["failures"] if f["host"] == host.name)
    assert "docker_daemon_options" in message and "dict" in message


# --- no hosts needed ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "message"), [("gpu99", "'gpu99' is neither a host nor a group"), ("gpu9*", "no host in")]
)
def test_unknown_target_lists_what_exists(target, message, tmp_path):
    proc = toolkit(
        "provision", target, "-i", str(REPO / "inventory"), env={"TOOLKIT_STATE_DIR": str(tmp_path)}
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "nvidia_nodes" in proc.stderr and "gpu01" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_broken_inventory_names_the_file(tmp_path):
    bad = tmp_path / "hosts.yml"
    bad.write_text("all:\n  children:\n    gpu_nodes:\n      hosts:\n        a: {x: 1\n")
    proc = toolkit("provision", "all", "-i", str(bad), env={"TOOLKIT_STATE_DIR": str(tmp_path)})
    assert proc.returncode == 2
    assert f"cannot read inventory {bad}" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["all", "--roles", "common,cuda"], "unknown role(s): cuda"),
        (["all", "--roles", "apt_packages"], "unknown role(s): apt_packages"),  # internal, not a capability
        (["gpu01,gpu99"], "'gpu99' is neither a host nor a group"),
        (["all", "--keep-artifacts", "0"], "--keep-artifacts must be at least 1"),
    ],
)
def test_bad_provision_arguments(args, message, tmp_path):
    proc = toolkit(
        "provision", *args, "-i", str(REPO / "inventory"), env={"TOOLKIT_STATE_DIR": str(tmp_path)}
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_example_inventory_reads_through_ansible():
    from toolkit.provision.inventory import load_inventory

    inventory = load_inventory(REPO / "inventory")
    assert set(inventory.groups["gpu_nodes"]) == {"gpu01", "gpu02", "amd01"}
    assert inventory.resolve("nvidia_nodes") == ["gpu01", "gpu02"]
    text = (REPO / "inventory/group_vars/all.yml").read_text()
    assert "lookup('ansible.builtin.env', 'TOOLKIT_BMC_PASSWORD')" in text


ROLES = [*CAPABILITIES, "apt_vendor_repo", "apt_packages", "os_support"]


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_match_defaults(role):
    root = REPO / "playbooks/roles" / role
    defaults = yaml.safe_load((root / "defaults/main.yml").read_text()) or {}
    specs = yaml.safe_load((root / "meta/argument_specs.yml").read_text())["argument_specs"]["main"][
        "options"
    ]
    required = {k for k, v in specs.items() if v.get("required")}
    assert set(defaults) == set(specs) - required, role
    assert all(k.startswith(role) for k in specs), role


def test_role_defaults_point_at_the_vendors():
    def default(role, key):
        return yaml.safe_load((REPO / f"playbooks/roles/{role}/defaults/main.yml").read_text())[key]

    assert default("nvidia_driver", "nvidia_driver_cuda_repo_base_url").startswith(
        "https://developer.download.nvidia.com/compute/cuda/repos"
    )
    assert default("cuda_toolkit", "cuda_toolkit_repo_base_url") == default(
        "nvidia_driver", "nvidia_driver_cuda_repo_base_url"
    )
    assert default("nvidia_container_toolkit", "nvidia_container_toolkit_key_url").startswith(
        "https://nvidia.github.io/libnvidia-container/"
    )
    assert default("rocm", "rocm_repo_base_url") == "https://repo.radeon.com"
    assert default("docker", "docker_repo_url").startswith("https://download.docker.com/linux/")
    assert (
        default("nvidia_container_toolkit", "nvidia_container_toolkit_repo_url")
        .strip()
        .startswith("https://nvidia.github.io/libnvidia-container/stable/deb/")
    )


def test_reboot_flag_reboots_marked_hosts_and_waits(lab, state):
    host = lab.start_host(6)
    inventory = lab.inventory(
        [host],
        {"toolkit_reboot_boot_time_command": "awk '{print $22}' /proc/1/stat", "toolkit_reboot_timeout": 120},
        path=lab.dir / "inv-reboot.yml",
    )
    proc, doc = provision(lab, state, inventory, "all", "--roles", "grub", "--reboot")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert doc["rebooted"] == [host.name] and doc["reboot_required"] == []
    assert host.reboots == 1
    # the marker lived in /run: gone after the reboot; the grub drop-in stays
    assert host.ssh("test -e /var/run/reboot-required", check=False).returncode != 0
    assert host.ssh("test -e /etc/default/grub.d/90-toolkit.cfg").returncode == 0
    lab.stop_host(6)


def test_site_runs_the_docker_role_once_per_host(tmp_path):
    """A host in nvidia_nodes and qdrant_nodes gets Docker from the NVIDIA stack only; a CPU-only Qdrant
    host gets it from the Qdrant plays (issue 16, point 9). Read from ansible-playbook's own host lists."""
    import shutil
    import subprocess
    import sys

    groups = {
        "gpu_nodes": {"children": {"nvidia_nodes": {"hosts": {"gpu1": None}}}},
        "qdrant_nodes": {"hosts": {"gpu1": None, "cpu1": None}},
    }
    inv = tmp_path / "inv.yml"
    inv.write_text(yaml.safe_dump({"all": {"children": groups}}))
    playbook = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    argv = [playbook, "-i", str(inv), str(REPO / "playbooks/site.yml"), "--list-hosts"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    hosts: dict[str, set[str]] = {}
    for block in proc.stdout.split("play #")[1:]:
        head, _, rest = block.partition("hosts (")
        name = head.split("): ", 1)[1].split("\t")[0].strip()
        hosts[name] = set(rest.split("\n", 1)[1].split()) if "\n" in rest else set()
    with_docker = ("NVIDIA stack", "AMD stack", "Docker for Qdrant nodes without a GPU stack")
    docker = sorted(h for name in with_docker for h in hosts.get(name, ()))
    assert docker == ["cpu1", "gpu1"], proc.stdout  # each host once
    assert hosts["Qdrant"] == {"gpu1", "cpu1"}, proc.stdout
