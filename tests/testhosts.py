"""Real test hosts for the Ansible roles: Debian bookworm booted with systemd-nspawn, one network
namespace each, reached over SSH (docs/TESTING.md §1).

Used by the provisioning tests and by benchmarks/provision.py. Needs root and the Debian packages
debootstrap, systemd-container, socat, iproute2, openssh-client, zstd (the CI script installs them).

Traffic rule: hosts live at 10.213.N.2 inside namespaces this module creates; they reach the
machine's own Debian mirror (read from its apt sources) and a local vendor repository only through
socat bridges over unix sockets, never through a route out.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

CACHE = Path(os.environ.get("TOOLKIT_TEST_CACHE", "/var/cache/toolkit-tests"))
IMAGE_PACKAGES = "systemd systemd-sysv dbus openssh-server python3 python3-apt iproute2 ca-certificates"
# the cached image is named after what it holds: a changed package list builds a new one
IMAGE = CACHE / f"bookworm-minbase-{hashlib.sha256(IMAGE_PACKAGES.encode()).hexdigest()[:10]}.tar.zst"
SUBNET = os.environ.get("TOOLKIT_TEST_SUBNET", "10.213")
VENDOR_PORT = 8080  # the local vendor repository, as seen from inside a host


def requirements_missing() -> str | None:
    """Why test hosts cannot run here, or None."""
    if os.geteuid() != 0:
        return "test hosts need root (network namespaces, systemd-nspawn)"
    missing = [
        t for t in ("debootstrap", "systemd-nspawn", "socat", "ip", "ssh", "zstd") if not shutil.which(t)
    ]
    if missing:
        return (
            "missing tools: " + ", ".join(missing) + " (apt install debootstrap systemd-container socat ...)"
        )
    return None


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 sources first, then sources.list)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in path.read_text().splitlines():
            if line.startswith("URIs:"):
                for uri in line.split()[1:]:
                    if uri.rstrip("/").endswith("/debian"):
                        return uri.rstrip("/")
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            m = re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)/?\s", line)
            if m:
                return m.group(1)
    raise RuntimeError("no Debian mirror found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list")


def run(cmd: list[str] | str, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(cmd, shell=isinstance(cmd, str), **kw)


def socat(listen: str, connect: str, netns: str | None = None) -> subprocess.Popen:
    """One bridge end: socat from `listen` to `connect`, inside `netns` when given."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return subprocess.Popen(
        [*prefix, "socat", listen, connect], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def build_image() -> Path:
    """Build the bookworm image once per machine (cached as a zstd tarball; ~50 s, then ~1 s to extract)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if IMAGE.exists():
            return IMAGE
        root = Path(tempfile.mkdtemp(prefix="image-", dir=CACHE))
        try:
            run(["debootstrap", "--variant=minbase", "bookworm", str(root), debian_mirror()], timeout=900)
            run(
                f"chroot {root} apt-get install -y -q --no-install-recommends {IMAGE_PACKAGES}",
                timeout=900,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
            run(f"chroot {root} apt-get clean")
            (root / "etc/hostname").write_text("testhost\n")
            # systemd-nspawn provides the console; the machine-id is set per boot
            (root / "etc/machine-id").write_text("")
            tmp = IMAGE.with_suffix(".partial")
            run(f"tar --numeric-owner -C {root} -cf - . | zstd -q -T0 -o {tmp}", timeout=600)
            tmp.rename(IMAGE)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return IMAGE


def build_wheelhouse(folder: Path, extras: str = "") -> Path:
    """The toolkit's wheel and its dependencies (with `extras`, e.g. "vectors"), as a user builds them for
    nodes without a package index. Built from a copy of the sources so that no build/ or egg-info lands
    in the checkout."""
    import sys

    repo = Path(__file__).resolve().parent.parent
    src = folder / "src"
    shutil.copytree(repo / "toolkit", src / "toolkit", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(repo / name, src / name)
    wheels = folder / "wheels"
    spec = f"{src}[{extras}]" if extras else str(src)
    run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", spec, "-w", str(wheels)],
        timeout=600,
    )
    return wheels


@dataclass
class Host:
    n: int
    name: str
    ip: str
    root: Path
    netns: str
    key: Path
    process: subprocess.Popen | None = None
    bridges: list[subprocess.Popen] = field(default_factory=list)
    stopping: bool = False
    reboots: int = 0

    def ssh_args(self) -> list[str]:
        return [
            "ssh",
            "-i",
            str(self.key),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "BatchMode=yes",
            f"root@{self.ip}",
        ]

    def ssh(self, command: str, check: bool = True, timeout: int = 120) -> subprocess.CompletedProcess:
        return run([*self.ssh_args(), command], check=check, timeout=timeout)

    def stop(self) -> None:
        """Shut the host down (SIGTERM makes nspawn power the container off cleanly)."""
        self.stopping = True
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for b in self.bridges:
            with contextlib.suppress(ProcessLookupError):
                b.kill()
            b.wait()
        self.bridges.clear()


class Lab:
    """A set of test hosts sharing an SSH key and the bridges to the mirror and the vendor repository."""

    def __init__(self, workdir: Path, vendor_root: Path | None = None):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = self.dir / "id_ed25519"
        if not self.key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)])
        self.mirror = urlparse(debian_mirror())
        self.vendor_root = vendor_root
        self.hosts: dict[int, Host] = {}
        self._servers: list[subprocess.Popen] = []
        self._prefix = f"tk{os.getpid() % 10000}"
        self._start_bridges()

    # -- root-namespace ends of the bridges -------------------------------------------------------
    def _start_bridges(self) -> None:
        mirror_port = self.mirror.port or 80
        self.mirror_sock = self.dir / "mirror.sock"
        self._servers.append(
            socat(
                f"UNIX-LISTEN:{self.mirror_sock},fork,unlink-early",
                f"TCP:{self.mirror.hostname}:{mirror_port}",
            )
        )
        self.vendor_sock = None
        if self.vendor_root is not None:
            self.vendor_sock = self.dir / "vendor.sock"
            http = subprocess.Popen(
                [
                    "python3",
                    "-u",
                    "-m",
                    "http.server",
                    "0",
                    "--bind",
                    "127.0.0.1",
                    "--directory",
                    str(self.vendor_root),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            self._servers.append(http)
            line = http.stdout.readline()  # "Serving HTTP on 127.0.0.1 port NNNN ..."
            self.vendor_http_port = int(re.search(r"port (\d+)", line).group(1))
            self._servers.append(
                socat(
                    f"UNIX-LISTEN:{self.vendor_sock},fork,unlink-early",
                    f"TCP:127.0.0.1:{self.vendor_http_port}",
                )
            )
        deadline = time.monotonic() + 5
        while not (self.mirror_sock.exists() and (self.vendor_sock is None or self.vendor_sock.exists())):
            if time.monotonic() > deadline:
                raise RuntimeError("socat bridges did not start")
            time.sleep(0.02)

    # -- hosts ------------------------------------------------------------------------------------
    def start_host(self, n: int, image: Path | None = None) -> Host:
        image = image or build_image()
        root = self.dir / f"host{n}"
        if root.exists():
            shutil.rmtree(root)
        root.mkdir()
        run(f"zstd -dc {image} | tar -C {root} --numeric-owner -xf -", timeout=300)
        ssh_dir = root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(Path(f"{self.key}.pub").read_text())
        os.chmod(ssh_dir / "authorized_keys", 0o600)
        hosts = root / "etc/hosts"
        hosts.write_text(f"127.0.0.1 localhost node{n}\n127.0.0.1 {self.mirror.hostname}\n")
        (root / "etc/hostname").write_text(f"node{n}\n")
        # Where the machine itself lacks CAP_SYS_RESOURCE (some sandboxes), dbus-daemon cannot raise its fd
        # limit and never sends READY=1, so boot hangs on dbus.service; Type=simple lets boot finish.
        dropin = root / "etc/systemd/system/dbus.service.d"
        dropin.mkdir(parents=True, exist_ok=True)
        (dropin / "test-host.conf").write_text("[Service]\nType=simple\n")

        ns, veth, ip = f"{self._prefix}n{n}", f"{self._prefix}v{n}", f"{SUBNET}.{n}.2"
        run(["ip", "netns", "add", ns])
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "host0", "netns", ns])
        run(["ip", "addr", "add", f"{SUBNET}.{n}.1/24", "dev", veth])
        run(["ip", "link", "set", veth, "up"])
        run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "host0"])
        run(["ip", "-n", ns, "link", "set", "host0", "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        host = Host(n=n, name=f"node{n}", ip=ip, root=root, netns=ns, key=self.key)
        self.hosts[n] = host
        # namespace ends of the bridges: the host's own 127.0.0.1:80 is the mirror, :8080 the vendor repo
        listen = "bind=127.0.0.1,fork,reuseaddr"
        host.bridges.append(
            socat(f"TCP-LISTEN:{self.mirror.port or 80},{listen}", f"UNIX-CONNECT:{self.mirror_sock}", ns)
        )
        if self.vendor_sock:
            host.bridges.append(
                socat(f"TCP-LISTEN:{VENDOR_PORT},{listen}", f"UNIX-CONNECT:{self.vendor_sock}", ns)
            )
        log = open(self.dir / f"host{n}.log", "a")  # noqa: SIM115 - lives as long as the container
        command = [
            "systemd-nspawn",
            "-q",
            "-b",
            "-D",
            str(root),
            "-M",
            f"{self._prefix}node{n}",
            "--register=no",
            "--keep-unit",
            f"--network-namespace-path=/run/netns/{ns}",
            "--capability=all",
            "--system-call-filter=@mount @keyring bpf",
            "--console=pipe",
        ]

        def boot() -> subprocess.Popen:
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "1"},
                start_new_session=True,
            )

        host.process = boot()

        def supervise() -> None:
            # a reboot inside the container ends nspawn with 133: boot it again, as a real host comes back
            while not host.stopping:
                code = host.process.wait()
                if code != 133 or host.stopping:
                    return
                host.reboots += 1
                host.process = boot()

        threading.Thread(target=supervise, daemon=True).start()
        self.wait_ready(host)
        return host

    def wait_ready(self, host: Host, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if host.process.poll() is not None:
                raise RuntimeError(f"{host.name} exited: see {self.dir / f'host{host.n}.log'}")
            proc = host.ssh("systemctl is-system-running --wait", check=False, timeout=60)
            if proc.returncode == 0 or proc.stdout.strip() in ("running", "degraded"):
                return
            time.sleep(0.3)
        raise RuntimeError(f"{host.name} did not come up in {timeout:.0f} s")

    def stop_host(self, n: int) -> None:
        host = self.hosts.get(n)
        if host:
            host.stop()

    def close(self) -> None:
        for host in self.hosts.values():
            host.stop()
            run(["ip", "netns", "del", host.netns], check=False)
            shutil.rmtree(host.root, ignore_errors=True)
        self.hosts.clear()
        for server in self._servers:
            with contextlib.suppress(ProcessLookupError):
                server.kill()
            server.wait()
        self._servers.clear()

    def inventory(
        self,
        hosts: list[Host],
        extra_vars: dict | None = None,
        path: Path | None = None,
        group: str = "nvidia_nodes",
    ) -> Path:
        """A YAML inventory: `hosts` in `group` (a child of gpu_nodes), reached with the lab's key, with the
        role variables a container needs (no kernel headers, no update-grub: the kernel is the machine's)."""
        import yaml

        host_vars = {h.name: {"ansible_host": h.ip, "gpu_profile": "cpu"} for h in hosts}
        doc = {
            "all": {
                "children": {"gpu_nodes": {"children": {group: {"hosts": host_vars}}}},
                "vars": {
                    "ansible_user": "root",
                    "ansible_ssh_private_key_file": str(self.key),
                    "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
                    "ansible_python_interpreter": "/usr/bin/python3",
                    "common_install_kernel_headers": False,
                    "grub_update": False,
                    "nvidia_driver_dkms": False,
                    **(extra_vars or {}),
                },
            }
        }
        path = path or self.dir / "inventory.yml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path
