"""Fleet health sweep against many simulated nodes on this machine.

Each simulated node is a local host of a generated inventory (`ansible_connection: local`): the controller
runs its `toolkit health` (system collector + its own BMC) through the same wrapper and gathering as over
SSH, and each node has its own BMC, a real OpenIPMI `ipmi_sim` on a loopback port. Prints the time of one
node, the time of the whole sweep for several --forks values, and their ratio.

    .venv/bin/python benchmarks/fleet_sweep.py                 # 50 nodes, forks 10, 25, 50
    .venv/bin/python benchmarks/fleet_sweep.py --nodes 20 --forks 5,20

Needs root-free loopback only; Debian packages openipmi (ipmi_sim, sdrcomp). Goal (issue 7): 50 BMCs
swept in under 10x the time of one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import ipmi_sim  # noqa: E402  (the tests' BMC fixture: a real ipmi_sim per node)


def sweep(inventory: Path, results: Path, forks: int, limit: str | None = None) -> tuple[float, dict]:
    argv = [
        sys.executable,
        "-m",
        "toolkit",
        "health",
        "-i",
        str(inventory),
        "--forks",
        str(forks),
        "--json",
        "--results-dir",
        str(results),
        "--skip",
        "gpu",
        "--skip",
        "docker",
    ]
    if limit:
        argv += ["--limit", limit]
    start = time.perf_counter()
    proc = subprocess.run(
        argv, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"}, timeout=900
    )
    elapsed = time.perf_counter() - start
    doc = json.loads(proc.stdout)
    return elapsed, doc


def _bmc_read(host: dict) -> bool:
    """The node's report came back with its BMC read. (Its overall state is not counted: the simulated
    nodes share this machine, so their system.load check sees the whole sweep's load.)"""
    checks = (host.get("result") or {}).get("checks", [])
    return any(c["name"] == "bmc.connection" and c["status"] == "ok" for c in checks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--forks", default="10,25,50", help="comma-separated --forks values to sweep with")
    parser.add_argument("--repeat", type=int, default=3, help="runs per configuration (median kept)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fleet-sweep-"))
    bmcs, hosts = [], {}
    toolkit = work / "toolkit"
    toolkit.write_text(f'#!/bin/sh\nexec {sys.executable} -m toolkit "$@"\n')
    toolkit.chmod(0o755)
    try:
        start = time.perf_counter()
        for i in range(args.nodes):
            name = f"node{i + 1:03d}"
            bmc = ipmi_sim.Bmc(work / f"bmc-{name}", password=f"sweep-{i}").start()
            bmcs.append(bmc)
            cfg = work / f"{name}.yml"
            cfg.write_text(
                f"bmc:\n  url: ipmi://ADMIN@127.0.0.1:{bmc.port}\n  password: {bmc.password}\n  timeout: 10\n"
            )
            cfg.chmod(0o600)
            hosts[name] = {
                "ansible_connection": "local",
                "toolkit_path": str(toolkit),
                "health_report_config_path": str(cfg),
            }
        print(f"{args.nodes} ipmi_sim BMCs started in {time.perf_counter() - start:.1f} s")
        import yaml

        inventory = work / "inventory.yml"
        inventory.write_text(yaml.safe_dump({"all": {"hosts": hosts}}, sort_keys=False))
        results = work / "results"
        one = []
        for _ in range(args.repeat):
            elapsed, doc = sweep(inventory, results, 1, limit="node001")
            assert _bmc_read(doc["hosts"][0]), doc["hosts"][0]
            one.append(elapsed)
        single = statistics.median(one)
        per_host = doc["hosts"][0]["duration_seconds"]
        print(
            f"one node: {single:.2f} s for the whole command (its node run {per_host:.2f} s), "
            f"{os.cpu_count()} CPUs"
        )
        print(f"{'forks':>6} {'sweep s':>8} {'x one':>6} {'BMCs read':>9} {'mean host s':>12}")
        for forks in [int(f) for f in args.forks.split(",")]:
            times, docs = [], []
            for _ in range(args.repeat):
                elapsed, doc = sweep(inventory, results, forks)
                times.append(elapsed)
                docs.append(doc)
            t = statistics.median(times)
            doc = docs[times.index(t)]
            ok = sum(_bmc_read(h) for h in doc["hosts"])
            mean = statistics.mean(h["duration_seconds"] for h in doc["hosts"])
            print(f"{forks:>6} {t:>8.2f} {t / single:>6.1f} {ok:>5}/{len(doc['hosts']):<3} {mean:>12.2f}")
    finally:
        for bmc in bmcs:
            bmc.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
