"""Wall time of `toolkit health` with no BMC, with an IPMI BMC and with a Redfish BMC, each as a ratio to
`ipmitool -I lanplus -C 3 … sdr elist` against the same simulated BMC. Goals: local collection < 1 s;
the IPMI sweep no slower than ipmitool's (ratio of the BMC collector's own time to ipmitool <= 1).

    .venv/bin/python benchmarks/health.py [--runs 10]

The BMCs are the test peers: OpenIPMI's ipmi_sim (tests/ipmi_sim.py, behind its ~3 ms UDP relay, which
ipmitool also goes through) and the HTTPS Redfish server of tests/redfish_server.py. All commands run
alternately in one loop, so machine noise hits them alike; compare ratios, not absolute times.
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

import ipmi_sim  # noqa: E402
import redfish_server  # noqa: E402

PASSWORD = "Bench-BMC-pass-1"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="health-bench-"))
    (work / "ipmi").mkdir()
    sim = ipmi_sim.Bmc(work / "ipmi", password=PASSWORD).start()
    cert, key = redfish_server.make_certificate(work)
    state = redfish_server.BmcState(password=PASSWORD)
    env = {
        **os.environ,
        "TOOLKIT_BMC_PASSWORD": PASSWORD,
        "IPMI_PASSWORD": PASSWORD,
        "TOOLKIT_BMC_CA_BUNDLE": str(cert),
        "NO_COLOR": "1",
    }
    health = [sys.executable, "-m", "toolkit", "health", "--json"]
    try:
        with redfish_server.RedfishServer(state, cert, key) as rf:
            commands = {
                "ipmitool sdr elist": [
                    "ipmitool",
                    "-I",
                    "lanplus",
                    "-C",
                    "3",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    str(sim.port),
                    "-U",
                    "ADMIN",
                    "-E",
                    "sdr",
                    "elist",
                ],
                # the same work as toolkit's sweep: readings with thresholds, the event log, chassis power
                "ipmitool sensor+sel+power": [
                    "sh",
                    "-c",
                    " && ".join(
                        f"ipmitool -I lanplus -C 3 -H 127.0.0.1 -p {sim.port} -U ADMIN -E {what} >/dev/null"
                        for what in ("sensor", "sel elist", "power status")
                    ),
                ],
                "health, no BMC": health,
                "health, IPMI (pyghmi)": [*health, "--bmc", f"ipmi://ADMIN@127.0.0.1:{sim.port}"],
                "health, IPMI (ipmitool)": [
                    *health,
                    "--bmc",
                    f"ipmi://ADMIN@127.0.0.1:{sim.port}",
                    "--bmc-tool",
                    "ipmitool",
                ],
                "health, Redfish": [*health, "--bmc", f"redfish://ADMIN@127.0.0.1:{rf.port}"],
            }
            wall = {name: [] for name in commands}
            bmc_part = {name: [] for name in commands}
            for _ in range(args.runs):
                for name, cmd in commands.items():
                    t0 = time.perf_counter()
                    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
                    wall[name].append(time.perf_counter() - t0)
                    if name.startswith("health"):
                        doc = json.loads(proc.stdout)
                        conn = [c for c in doc["checks"] if c["name"] == "bmc.connection"]
                        if conn and conn[0]["status"] != "ok":
                            raise SystemExit(f"{name}: BMC not read: {conn[0]['detail']}")
                        part = [c for c in doc.get("collectors", []) if c["name"] == "bmc"]
                        bmc_part[name].append(part[0]["duration_seconds"] if part else 0.0)
                    elif proc.returncode != 0:
                        raise SystemExit(f"{name} failed: {proc.stderr}")
    finally:
        sim.stop()
    base = statistics.median(wall["ipmitool sdr elist"])
    print(f"{'command':<26} {'wall ms':>9} {'ratio':>6} {'BMC part ms':>12} {'BMC ratio':>10}")
    for name in commands:
        med = statistics.median(wall[name])
        part = statistics.median(bmc_part[name]) if bmc_part[name] else None
        part_txt = f"{part * 1e3:>12.1f} {part / base:>10.2f}" if part else f"{'':>12} {'':>10}"
        print(f"{name:<26} {med * 1e3:>9.1f} {med / base:>6.2f} {part_txt}")
    local = statistics.median(wall["health, no BMC"])
    ipmi = statistics.median(bmc_part["health, IPMI (pyghmi)"])
    print(f"goal local collection < 1 s: {'met' if local < 1 else 'NOT met'} ({local:.2f} s wall, whole CLI)")
    print(
        f"goal IPMI sweep <= ipmitool sdr elist: {'met' if ipmi <= base else 'NOT met'} "
        f"({ipmi * 1e3:.0f} ms vs {base * 1e3:.0f} ms)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
