"""Local signed apt repositories standing in for NVIDIA's and AMD's, which cannot be reached here
(docs/TESTING.md §2).

Every package is a TEST STUB built with dpkg-deb: the vendor's real package names, versions and
dependency chain, a description saying it is a stub, and binaries that only log how they were
called (nvidia-ctk also edits daemon.json the way the real one does, so idempotency is testable).
The layouts copy the vendors': NVIDIA's flat repositories, AMD's dists/ repositories. Indexes come
from apt-ftparchive and are signed with a throwaway gpg key; a second throwaway key serves the
"wrong key fails closed" case.

Sound for URL templating, key and signature handling, version pins, package selection and what runs
after install. Not a test of the vendors' packages themselves: that needs real GPU hosts.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import textwrap
from pathlib import Path

DRIVER = "580.95.05-1"
DRIVER_NEWER = "580.105.08-1"
CUDA_TOOLKIT = "13.0.2-1"
CUDA_NVCC = "13.0.88-1"
NCT = "1.17.8-1"
NCT_NEWER = "1.18.0-1"
ROCM = "6.2.4.60204-139~22.04"
AMDGPU_DKMS = "1:6.8.5.60204-2070768.22.04"

NVIDIA_CTK = r"""#!/usr/bin/python3
# TEST STUB of nvidia-ctk: logs its arguments; `runtime configure --runtime=docker` adds the nvidia
# runtime to /etc/docker/daemon.json (tab-indented, as the real tool writes it).
import json, os, sys
with open("/var/log/toolkit-stub-nvidia-ctk.log", "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\n")
args = sys.argv[1:]
if args[:2] == ["runtime", "configure"] and "--runtime=docker" in args:
    path = "/etc/docker/daemon.json"
    config = json.load(open(path)) if os.path.exists(path) and os.path.getsize(path) else {}
    config.setdefault("runtimes", {})["nvidia"] = {"args": [], "path": "nvidia-container-runtime"}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(config, f, indent="\t")
    print("INFO Wrote updated config to /etc/docker/daemon.json")
"""

LOGGER = """#!/bin/sh
# TEST STUB: records that it was called.
echo "$(basename "$0") $*" >> /var/log/toolkit-stub-calls.log
"""

# The unit as Ubuntu's nvidia-graphics-drivers packages ship it (its shape as `systemctl cat` prints it in
# public reports): static (no [Install]), stopped when nothing needs it, and persistence mode OFF. The role
# must turn persistence on however the packaged unit is written.
PERSISTENCED_UNIT = """[Unit]
Description=NVIDIA Persistence Daemon
Wants=syslog.target
StopWhenUnneeded=true
Before=systemd-backlight@backlight:nvidia_0.service

[Service]
Type=forking
ExecStart=/usr/bin/nvidia-persistenced --user nvidia-persistenced --no-persistence-mode --verbose
ExecStopPost=/bin/rm -rf /var/run/nvidia-persistenced
"""

PERSISTENCED = """#!/bin/sh
# TEST STUB of nvidia-persistenced: logs its arguments and forks a child that stays up, as the daemon does.
echo "nvidia-persistenced $*" >> /var/log/toolkit-stub-calls.log
sleep infinity </dev/null >/dev/null 2>&1 &
exit 0
"""

# NVIDIA Fabric Manager, R580. From R580 on, NVIDIA's CUDA repositories name the package
# `nvidia-fabricmanager`, providing the virtual `nvidia-fabricmanager-580` (NVIDIA/gpu-driver-container
# pull request 451), and NSCQ `libnvidia-nscq`, both at the driver's version
# (NVIDIA/gpu-driver-container ubuntu24.04/install.sh, commit 352ed15ed5a7: for branch >= 580 it installs
# `nvidia-fabricmanager=${DRIVER_VERSION}*` and `libnvidia-nscq=${DRIVER_VERSION}*`).
# The unit: Debian packaging installs nvidia-fabricmanager.service into /lib/systemd/system
# (NVIDIA/apt-packaging-fabric-manager, debian/templates/nvidia-fabricmanager-BRANCH.install.in, 0f01ce7).
# Its [Service] as `systemctl status` shows it on a 590.48.01 node (a public report):
# "ExecStartPre=/usr/bin/nvidia-fabricmanager-start.sh --mode precheck",
# "ExecStart=/usr/bin/nvidia-fabricmanager-start.sh --mode start", main process
# "/usr/bin/nv-fabricmanager -c /usr/share/nvidia/nvswitch/fabricmanager.cfg" forked by it (Type=forking),
# description "NVIDIA fabric manager service". The wrapper's interface dates from 570.158.01
# (NVIDIA/gpu-driver-container pull request 383); older units (public `systemctl status` on 535.247.01) ran
# ExecStart=/usr/bin/nv-fabricmanager -c /usr/share/nvidia/nvswitch/fabricmanager.cfg directly. The lines
# `systemctl status` does not show (After/Requires, User, PrivateTmp, TimeoutStartSec, LimitCORE, [Install])
# follow NVIDIA's units of the same family (nvidia-imex.service): not verified line by line.
FABRICMANAGER_UNIT = """[Unit]
Description=NVIDIA fabric manager service
After=network-online.target
Requires=network-online.target

[Service]
User=root
PrivateTmp=false
Type=forking
TimeoutStartSec=240

ExecStartPre=/usr/bin/nvidia-fabricmanager-start.sh --mode precheck
ExecStart=/usr/bin/nvidia-fabricmanager-start.sh --mode start

LimitCORE=infinity

[Install]
WantedBy=multi-user.target
"""

FABRICMANAGER_START = """#!/bin/sh
# TEST STUB of nvidia-fabricmanager-start.sh: logs its arguments; "--mode start" starts the daemon the way the
# real script does on a pre-NVL5 baseboard (HGX A100/H100/H200); "--mode precheck" succeeds.
echo "nvidia-fabricmanager-start.sh $*" >> /var/log/toolkit-stub-calls.log
case " $* " in
  *" --mode start "*) exec /usr/bin/nv-fabricmanager -c /usr/share/nvidia/nvswitch/fabricmanager.cfg ;;
esac
exit 0
"""


def _nv_fabricmanager(version: str) -> str:
    """TEST STUB of the daemon: like the real one it needs its config file and the loaded driver of its own
    version (it aborts otherwise), then forks a child that stays up and returns."""
    upstream = version.split("-")[0]
    return f"""#!/bin/sh
# TEST STUB of nv-fabricmanager {upstream}: logs its arguments, checks the config file and the loaded driver's
# version as the real daemon does, forks a child that stays up and exits (Type=forking).
echo "nv-fabricmanager $*" >> /var/log/toolkit-stub-calls.log
if [ "$1" != "-c" ] || [ ! -r "$2" ]; then
  echo "nv-fabricmanager (TEST STUB): cannot read config file $2" >&2; exit 1
fi
if ! grep -q " {upstream} " /proc/driver/nvidia/version 2>/dev/null; then
  echo "nv-fabricmanager (TEST STUB): driver interface version {upstream} does not match the loaded one" >&2
  exit 1
fi
sleep infinity </dev/null >/dev/null 2>&1 &
exit 0
"""


def _deb(
    out: Path,
    name: str,
    version: str,
    depends: str = "",
    files: dict[str, tuple[str, int]] | None = None,
    arch: str = "amd64",
    provides: str = "",
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "DEBIAN").mkdir()
        control = (
            f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\n"
            "Maintainer: toolkit tests <tests@toolkit.invalid>\n"
            + (f"Depends: {depends}\n" if depends else "")
            + (f"Provides: {provides}\n" if provides else "")
            + f"Description: TEST STUB of {name} - not the vendor's package\n"
            " Built by toolkit's test suite with the vendor's name, version and dependencies.\n"
        )
        (root / "DEBIAN/control").write_text(control)
        for path, (content, mode) in (files or {}).items():
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
            target.chmod(mode)
        safe_version = version.replace(":", "%3a")
        subprocess.run(
            [
                "dpkg-deb",
                "--root-owner-group",
                "-Zgzip",
                "--build",
                str(root),
                str(out / f"{name}_{safe_version}_{arch}.deb"),
            ],
            check=True,
            capture_output=True,
        )


def _gpg(home: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["gpg", "--batch", "--homedir", str(home), *args], check=True, capture_output=True, **kw
    )


def _new_key(home: Path, name: str) -> str:
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    _gpg(
        home,
        "--passphrase",
        "",
        "--quick-gen-key",
        f"{name} <{name}@toolkit.invalid>",
        "ed25519",
        "sign",
        "1d",
    )
    return _gpg(home, "--armor", "--export", text=True).stdout


def _sign(home: Path, folder: Path) -> None:
    release = folder / "Release"
    _gpg(home, "--yes", "--clearsign", "-o", str(folder / "InRelease"), str(release))
    _gpg(home, "--yes", "-abs", "-o", str(folder / "Release.gpg"), str(release))


def _ftparchive(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["apt-ftparchive", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def _release_options(**fields: str) -> list[str]:
    return [f"-o=APT::FTPArchive::Release::{k}={v}" for k, v in fields.items()]


def _flat_repo(folder: Path, home: Path, origin: str) -> None:
    (folder / "Packages").write_text(_ftparchive(folder, "packages", "."))
    release = _ftparchive(folder, *_release_options(Origin=origin, Label=origin), "release", ".")
    (folder / "Release").write_text(release)
    _sign(home, folder)


def _dists_repo(root: Path, home: Path, suite: str, origin: str) -> None:
    binary = root / "dists" / suite / "main" / "binary-amd64"
    binary.mkdir(parents=True, exist_ok=True)
    (binary / "Packages").write_text(_ftparchive(root, "packages", "pool"))
    fields = {
        "Origin": origin,
        "Label": origin,
        "Suite": suite,
        "Codename": suite,
        "Components": "main",
        "Architectures": "amd64",
    }
    release = _ftparchive(root, *_release_options(**fields), "release", f"dists/{suite}")
    (root / "dists" / suite / "Release").write_text(release)
    _sign(home, root / "dists" / suite)


def build(root: Path) -> Path:
    """Build every stub repository under `root`; returns `root` (serve it over HTTP)."""
    root = Path(root)
    keys = root.parent / f"{root.name}-gnupg"
    good = _new_key(keys / "good", "toolkit-test-vendor")
    wrong = _new_key(keys / "wrong", "toolkit-test-wrong")
    home = keys / "good"

    # NVIDIA CUDA repository, flat: /cuda/repos/debian12/x86_64/
    cuda = root / "cuda/repos/debian12/x86_64"
    cuda.mkdir(parents=True)
    for driver in (DRIVER, DRIVER_NEWER):
        branch = driver.split(".")[0]
        _deb(
            cuda,
            f"cuda-drivers-{branch}",
            driver,
            # ">=" as NVIDIA's metapackages: without the role's pin apt would take the newest (580.105.08)
            f"nvidia-driver-cuda (>= {driver}), nvidia-kernel-dkms (>= {driver}), "
            f"nvidia-persistenced (>= {driver})",
        )
        _deb(
            cuda,
            "nvidia-driver-cuda",
            driver,
            files={"/usr/lib/toolkit-stub/nvidia-driver-cuda": (LOGGER, 0o755)},
        )
        _deb(cuda, "nvidia-kernel-dkms", driver)
        _deb(
            cuda,
            "nvidia-persistenced",
            driver,
            files={
                "/usr/bin/nvidia-persistenced": (PERSISTENCED, 0o755),
                "/usr/lib/systemd/system/nvidia-persistenced.service": (PERSISTENCED_UNIT, 0o644),
            },
        )
        _deb(
            cuda,
            "nvidia-fabricmanager",
            driver,
            provides=f"nvidia-fabricmanager-{branch}",
            files={
                "/usr/bin/nv-fabricmanager": (_nv_fabricmanager(driver), 0o755),
                "/usr/bin/nvidia-fabricmanager-start.sh": (FABRICMANAGER_START, 0o755),
                "/lib/systemd/system/nvidia-fabricmanager.service": (FABRICMANAGER_UNIT, 0o644),
                "/usr/share/nvidia/nvswitch/fabricmanager.cfg": (
                    "# TEST STUB of fabricmanager.cfg\nFABRIC_MODE=0\n",
                    0o644,
                ),
            },
        )
        _deb(
            cuda,
            "libnvidia-nscq",
            driver,
            files={"/usr/share/doc/libnvidia-nscq/TEST-STUB": ("TEST STUB of NSCQ, no library\n", 0o644)},
        )
    _deb(cuda, "cuda-toolkit-13-0", CUDA_TOOLKIT, f"cuda-nvcc-13-0 (>= {CUDA_NVCC.split('-')[0]})")
    nvcc = "#!/bin/sh\necho 'nvcc: TEST STUB, Cuda compilation tools, release 13.0, V13.0.88'\n"
    _deb(cuda, "cuda-nvcc-13-0", CUDA_NVCC, files={"/usr/local/cuda-13.0/bin/nvcc": (nvcc, 0o755)})
    (cuda / "3bf863cc.pub").write_text(good)
    _flat_repo(cuda, home, "NVIDIA")

    # NVIDIA container toolkit, flat: /libnvidia-container/stable/deb/amd64/ and its key
    nct = root / "libnvidia-container/stable/deb/amd64"
    nct.mkdir(parents=True)
    for version in (NCT, NCT_NEWER):
        _deb(
            nct,
            "nvidia-container-toolkit",
            version,
            f"nvidia-container-toolkit-base (= {version}), "
            f"libnvidia-container-tools (>= {version.split('-')[0]})",
        )
        _deb(
            nct, "nvidia-container-toolkit-base", version, files={"/usr/bin/nvidia-ctk": (NVIDIA_CTK, 0o755)}
        )
        _deb(nct, "libnvidia-container-tools", version, f"libnvidia-container1 (>= {version.split('-')[0]})")
        _deb(nct, "libnvidia-container1", version)
    (root / "libnvidia-container/gpgkey").write_text(good)
    _flat_repo(nct, home, "https://nvidia.github.io/libnvidia-container/stable/deb/amd64")

    # AMD: /amdgpu/6.2.4/ubuntu and /rocm/apt/6.2.4, suite jammy, key /rocm/rocm.gpg.key
    amdgpu = root / "amdgpu/6.2.4/ubuntu"
    (amdgpu / "pool/main").mkdir(parents=True)
    _deb(amdgpu / "pool/main", "amdgpu-dkms", AMDGPU_DKMS, arch="all")
    _dists_repo(amdgpu, home, "jammy", "repo.radeon.com")
    rocm = root / "rocm/apt/6.2.4"
    (rocm / "pool/main").mkdir(parents=True)
    _deb(rocm / "pool/main", "rocm", ROCM, f"rocm-core (= {ROCM})")
    _deb(
        rocm / "pool/main", "rocm-core", ROCM, files={"/opt/rocm-6.2.4/.info/version": ("6.2.4-139\n", 0o644)}
    )
    _dists_repo(rocm, home, "jammy", "repo.radeon.com")
    (root / "rocm/rocm.gpg.key").write_text(good)

    # the wrong key, for the fail-closed case
    (root / "wrong-key.asc").write_text(wrong)
    os.chmod(root, 0o755)
    return root


def vendor_vars(base: str) -> dict:
    """Role variables pointing the vendor roles at the stub repositories served at `base`."""
    return {
        "nvidia_driver_cuda_repo_base_url": f"{base}/cuda/repos",
        "cuda_toolkit_repo_base_url": f"{base}/cuda/repos",
        "nvidia_container_toolkit_repo_url": f"{base}/libnvidia-container/stable/deb/amd64/",
        "nvidia_container_toolkit_key_url": f"{base}/libnvidia-container/gpgkey",
        "rocm_repo_base_url": base,
    }


if __name__ == "__main__":  # build once by hand: python tests/vendor_repo.py DIR
    import sys

    print(build(Path(sys.argv[1])))
    print(textwrap.dedent(str(vendor_vars("http://127.0.0.1:8080"))))
