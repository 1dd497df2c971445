"""NVIDIA Fabric Manager on NVSwitch nodes (role nvidia_driver), on real test hosts: Debian booted with
systemd-nspawn, over SSH, with NVIDIA's CUDA repository replaced by the signed stub repository of
tests/vendor_repo.py (docs/TESTING.md §1, §2).

A container has no PCI devices of its own, so each host gets a fake sysfs tree shaped like the real
/sys/bus/pci/devices (a folder per device holding `vendor`, `device` and `class`), and the role reads it
through `nvidia_driver_pci_sysfs`. The NVSwitch node also gets the state it has after the reboot that
loads the driver: a tmpfs over /proc/driver holding `nvidia/version` of the pinned driver, which the role
reads before it starts Fabric Manager and which the stub daemon checks, as the real one does.

Three runs of `toolkit provision --roles nvidia_driver` over two hosts:
1. node61 (NVSwitch) with nvidia_driver_fabricmanager false, node62 (no NVSwitch) with auto: neither gets it;
2. node61 with auto, node62 with true: both get it, at the driver's version and pinned; node61 starts it;
3. the same again: nothing changes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

import testhosts
import vendor_repo
from conftest import toolkit

MISSING = testhosts.requirements_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

HOSTS = (61, 62)  # their own subnets and namespaces: no other test module uses these numbers
VENDOR = f"http://127.0.0.1:{testhosts.VENDOR_PORT}"
SYSFS = "/srv/toolkit-test-sysfs/bus/pci/devices"
UPSTREAM = vendor_repo.DRIVER.split("-")[0]  # 580.95.05
TIMINGS: dict[str, float] = {}

# (vendor, device, class) per PCI address, as the files of /sys/bus/pci/devices/<address>/ hold them.
# An HGX H100 baseboard: four "GH100 [H100 NVSwitch]" (10de:22a3, class 0x068000 = bridge, other) next to
# its GPUs ("GH100 [H100 SXM5 80GB]", 10de:2330, class 0x030200 = 3D controller) and the host's own devices.
NVSWITCH_NODE = {
    **{f"0000:0{n}:00.0": ("0x10de", "0x22a3", "0x068000") for n in (5, 6, 7, 8)},
    **{f"0000:{bus}:00.0": ("0x10de", "0x2330", "0x030200") for bus in ("18", "2a", "3a", "5d")},
    "0000:00:00.0": ("0x8086", "0x09a2", "0x060000"),  # a host bridge
}
# A PCIe GPU node: NVIDIA GPUs, and a bridge of class 0x0680 from another vendor, but no NVSwitch.
PLAIN_NODE = {
    "0000:18:00.0": ("0x10de", "0x2331", "0x030200"),  # GH100 [H100 PCIe]
    "0000:00:04.0": ("0x8086", "0x2021", "0x068000"),  # not NVIDIA: not an NVSwitch
    "0000:00:00.0": ("0x8086", "0x09a2", "0x060000"),
}
FM_PACKAGES = ("nvidia-fabricmanager", "libnvidia-nscq")


def timed(key: str, fn, *args, **kwargs):
    start = time.monotonic()
    try:
        return fn(*args, **kwargs)
    finally:
        TIMINGS[key] = round(time.monotonic() - start, 1)


def fake_sysfs(host, devices: dict[str, tuple[str, str, str]]) -> None:
    script = [f"rm -rf {SYSFS}"]
    for address, (vendor, device, klass) in devices.items():
        folder = f"{SYSFS}/{address}"
        script += [f"mkdir -p {folder}"]
        script += [
            f"echo {value} > {folder}/{name}"
            for name, value in zip(("vendor", "device", "class"), (vendor, device, klass), strict=True)
        ]
    host.ssh(" && ".join(script))


def driver_loaded(host, version: str) -> None:
    """/proc/driver/nvidia/version as the loaded driver writes it (procfs itself cannot be written)."""
    host.ssh(
        "mountpoint -q /proc/driver || mount -t tmpfs -o size=64k toolkit-test-driver /proc/driver; "
        f"mkdir -p /proc/driver/nvidia && echo 'NVRM version: NVIDIA UNIX x86_64 Kernel Module  {version}  "
        "Release Build  (TEST STUB)' > /proc/driver/nvidia/version"
    )


def inventory(lab, hosts, settings: dict[str, str], path: Path) -> Path:
    """The lab's inventory with nvidia_driver_fabricmanager set per host."""
    inv = lab.inventory(
        hosts, {**vendor_repo.vendor_vars(VENDOR), "nvidia_driver_pci_sysfs": SYSFS}, path=path
    )
    doc = yaml.safe_load(inv.read_text())
    host_vars = doc["all"]["children"]["gpu_nodes"]["children"]["nvidia_nodes"]["hosts"]
    for name, value in settings.items():
        host_vars[name]["nvidia_driver_fabricmanager"] = value
    inv.write_text(yaml.safe_dump(doc, sort_keys=False))
    return inv


def provision(state: Path, inv: Path, *args: str):
    proc = toolkit(
        "provision",
        "all",
        "--roles",
        "nvidia_driver",
        "-i",
        str(inv),
        "--json",
        *args,
        env={"TOOLKIT_STATE_DIR": str(state)},
        timeout=900,
    )
    doc = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else None
    return proc, doc


def versions(host) -> dict[str, str]:
    """Installed packages among the driver's and Fabric Manager's, as dpkg reports them."""
    out = host.ssh(
        "dpkg-query -W -f='${db:Status-Abbrev} ${Package} ${Version}\\n' cuda-drivers-580 "
        + " ".join(FM_PACKAGES),
        check=False,
    ).stdout
    return {f[1]: f[2] for f in (line.split() for line in out.splitlines()) if f and f[0] == "ii"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("fabricmanager")
    vendor = vendor_repo.build(base / "vendor")
    testhosts.build_image()
    lab = testhosts.Lab(base / "lab", vendor_root=vendor)
    state = base / "state"
    try:
        nvswitch, plain = (timed(f"host{n}_boot_s", lab.start_host, n) for n in HOSTS)
        fake_sysfs(nvswitch, NVSWITCH_NODE)
        fake_sysfs(plain, PLAIN_NODE)
        driver_loaded(nvswitch, UPSTREAM)  # node61 as after the reboot into the pinned driver
        first_inv = inventory(
            lab, [nvswitch, plain], {"node61": "false", "node62": "auto"}, base / "inv-1.yml"
        )
        first = timed("run1_s", provision, state, first_inv)
        seen_after_first = {h.name: versions(h) for h in (nvswitch, plain)}
        inv = inventory(lab, [nvswitch, plain], {"node61": "auto", "node62": "true"}, base / "inv-2.yml")
        second = timed("run2_s", provision, state, inv)
        third = timed("run3_s", provision, state, inv)
        yield {
            "lab": lab,
            "state": state,
            "inv": inv,
            "nvswitch": nvswitch,
            "plain": plain,
            "first": first,
            "second": second,
            "third": third,
            "after_first": seen_after_first,
        }
    finally:
        print(f"\nfabricmanager timings: {TIMINGS}")
        lab.close()


def ok(run, *names):
    proc, doc = run
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    for name in names:
        assert doc["hosts"][name]["failures"] == 0 and doc["hosts"][name]["dark"] == 0, doc
    return doc


def test_false_never_installs_and_auto_needs_an_nvswitch(runs):
    """Run 1: node61 has NVSwitch chips but nvidia_driver_fabricmanager false; node62 has none (auto)."""
    ok(runs["first"], "node61", "node62")
    for name in ("node61", "node62"):
        installed = runs["after_first"][name]
        assert installed.get("cuda-drivers-580") == vendor_repo.DRIVER, installed
        assert not set(FM_PACKAGES) & set(installed), (name, installed)


def test_nvswitch_node_gets_fabric_manager_at_the_driver_version(runs):
    ok(runs["second"], "node61", "node62")
    host = runs["nvswitch"]
    installed = versions(host)
    # the repository also holds 580.105.08 of every package: only the pin keeps Fabric Manager on the driver
    assert installed == {name: vendor_repo.DRIVER for name in ("cuda-drivers-580", *FM_PACKAGES)}, installed
    pin = host.ssh("cat /etc/apt/preferences.d/toolkit-nvidia-driver").stdout
    [packages] = [line.split()[1:] for line in pin.splitlines() if line.startswith("Package:")]
    assert set(FM_PACKAGES) <= set(packages) and f"Pin: version {UPSTREAM}*" in pin
    policy = host.ssh("apt-cache policy nvidia-fabricmanager libnvidia-nscq").stdout
    assert policy.count(f"Candidate: {vendor_repo.DRIVER}") == 2, policy
    upgrade = host.ssh("apt-get -s -o Debug::NoLocking=1 upgrade").stdout
    assert "580.105.08" not in upgrade, upgrade


def test_fabric_manager_runs_forked_on_the_nvswitch_node(runs):
    host = runs["nvswitch"]
    assert host.ssh("systemctl is-enabled nvidia-fabricmanager").stdout.strip() == "enabled"
    assert host.ssh("systemctl is-active nvidia-fabricmanager", check=False).stdout.strip() == "active"
    shown = host.ssh(
        "systemctl show nvidia-fabricmanager -p Type -p SubState -p MainPID -p FragmentPath"
    ).stdout
    props = dict(line.split("=", 1) for line in shown.splitlines())
    assert props["Type"] == "forking" and props["SubState"] == "running", props
    assert props["FragmentPath"].endswith("/lib/systemd/system/nvidia-fabricmanager.service"), (
        props
    )  # packaged
    # the daemon forked: its child stays up, reparented to systemd, while the start script has exited
    ppid, args = host.ssh(f"ps -o ppid=,args= -p {props['MainPID']}").stdout.split(maxsplit=1)
    assert ppid == "1" and args.strip() == "sleep infinity", (ppid, args)
    calls = host.ssh("cat /var/log/toolkit-stub-calls.log").stdout.splitlines()
    assert "nvidia-fabricmanager-start.sh --mode precheck" in calls
    assert "nvidia-fabricmanager-start.sh --mode start" in calls
    assert "nv-fabricmanager -c /usr/share/nvidia/nvswitch/fabricmanager.cfg" in calls
    # started once: installed and started in run 2, left alone in run 3
    assert calls.count("nvidia-fabricmanager-start.sh --mode start") == 1, calls


def test_true_installs_it_without_nvswitch_and_waits_for_the_driver(runs):
    """node62 has no NVSwitch and no loaded driver: with true Fabric Manager is installed, pinned and enabled
    for the boot that loads the driver, and not started (it would abort on a driver that is not there)."""
    host = runs["plain"]
    installed = versions(host)
    assert installed == {name: vendor_repo.DRIVER for name in ("cuda-drivers-580", *FM_PACKAGES)}, installed
    assert host.ssh("systemctl is-enabled nvidia-fabricmanager").stdout.strip() == "enabled"
    assert host.ssh("systemctl is-active nvidia-fabricmanager", check=False).stdout.strip() == "inactive"
    calls = host.ssh("cat /var/log/toolkit-stub-calls.log", check=False).stdout
    assert "fabricmanager" not in calls


def test_third_run_changes_nothing(runs):
    ok(runs["second"], "node61", "node62")  # idempotency counts only after a clean run
    doc = ok(runs["third"], "node61", "node62")
    for name in ("node61", "node62"):
        assert doc["hosts"][name]["changed"] == 0, doc["hosts"][name]


def test_check_mode_on_the_converged_hosts_reports_nothing_to_change(runs):
    proc, doc = provision(runs["state"], runs["inv"], "--check", "--diff")
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    for name in ("node61", "node62"):
        assert doc["hosts"][name]["changed"] == 0, doc["changes"]
