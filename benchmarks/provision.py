"""Provisioning speed on real nspawn test hosts: one host, then three in parallel.

    sudo .venv/bin/python benchmarks/provision.py

Prints, for 1 and 3 hosts: the first converge of site.yml and the no-op re-run (wall time of
`toolkit provision`), and the toolkit's overhead on a no-op run as a ratio to `ansible-playbook`
run directly on the same playbook, inventory and Ansible settings (alternated, median of 3).
Goals: no-op re-run under 10 s per host; three hosts under 2x one host; overhead ratio <= 1.1.
Needs what the provisioning tests need (root, debootstrap, systemd-nspawn, socat, zstd).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import testhosts  # noqa: E402
import vendor_repo  # noqa: E402

BIN = Path(sys.executable).parent


def timed(cmd: list[str], env: dict) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    return time.perf_counter() - t0, proc.returncode


def main() -> int:
    missing = testhosts.requirements_missing()
    if missing:
        print(f"cannot run: {missing}")
        return 2
    work = Path(tempfile.mkdtemp(prefix="toolkit-bench-provision-"))
    vendor = vendor_repo.build(work / "vendor")
    testhosts.build_image()
    lab = testhosts.Lab(work / "hosts", vendor_root=vendor)
    env = {**os.environ, "TOOLKIT_STATE_DIR": str(work / "state"), "NO_COLOR": "1"}
    # the same Ansible settings toolkit passes through ansible-runner
    ansible_env = {
        **env,
        "ANSIBLE_ROLES_PATH": str(REPO / "playbooks/roles"),
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_GATHERING": "smart",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    }
    rows = {}
    try:
        for count, first in ((1, 1), (3, 2)):
            hosts = [lab.start_host(n) for n in range(first, first + count)]
            inv = lab.inventory(
                hosts,
                vendor_repo.vendor_vars(f"http://127.0.0.1:{testhosts.VENDOR_PORT}"),
                path=work / f"inv-{count}.yml",
            )
            toolkit_cmd = [str(BIN / "toolkit"), "provision", "all", "-i", str(inv)]
            direct_cmd = [str(BIN / "ansible-playbook"), "-i", str(inv), str(REPO / "playbooks/site.yml")]
            converge, rc = timed(toolkit_cmd, env)
            if rc != 0:
                print(f"converge of {count} host(s) failed (exit {rc}): no figures")
                return 1
            tk, direct = [], []
            for _ in range(3):
                seconds, rc = timed(toolkit_cmd, env)
                direct_seconds, direct_rc = timed(direct_cmd, ansible_env)
                if rc != 0 or direct_rc != 0:  # a fast failure is not a fast no-op
                    print(f"a no-op run failed (toolkit exit {rc}, ansible-playbook exit {direct_rc})")
                    return 1
                tk.append(seconds)
                direct.append(direct_seconds)
            rows[count] = (converge, statistics.median(tk), statistics.median(direct))
            for h in hosts:
                lab.stop_host(h.n)
    finally:
        lab.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'hosts':>5} {'converge s':>11} {'no-op s':>8} {'ansible-playbook no-op s':>25} {'overhead':>9}")
    for count, (converge, noop, direct) in rows.items():
        print(f"{count:>5} {converge:>11.1f} {noop:>8.1f} {direct:>25.1f} {noop / direct:>9.2f}")
    one, three = rows[1], rows[3]
    print(f"three hosts / one host: converge {three[0] / one[0]:.2f}x, no-op {three[1] / one[1]:.2f}x")
    goals = {
        "no-op re-run under 10 s per host": one[1] < 10,
        "three hosts under 2x one host": three[0] < 2 * one[0] and three[1] < 2 * one[1],
        "overhead ratio at most 1.1": max(one[1] / one[2], three[1] / three[2]) <= 1.1,
    }
    for goal, met in goals.items():
        print(f"{'met    ' if met else 'NOT met'} {goal}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
