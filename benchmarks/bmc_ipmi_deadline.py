"""How long one IPMI read of a 56-sensor board takes, cold (no SDR cache) and warm, with each reader.

The BMC is simulated: OpenIPMI's `ipmi_sim` shaped like a Supermicro X11 board (tests/ipmi_sim.py,
`board_56`), behind a loopback UDP relay that adds `--delay` seconds each way to every packet, as a BMC
that takes tens of milliseconds per request does. The figures size `target.DEFAULT_TIMEOUT`
(docs/HEALTH.md, "IPMI on real boards"). Prints median/min/max over `--runs` reads.

    .venv/bin/python benchmarks/bmc_ipmi_deadline.py                 # delay 0.02 s, 5 runs
    .venv/bin/python benchmarks/bmc_ipmi_deadline.py --delay 0.03 --runs 3

Needs Debian's openipmi (ipmi_sim, sdrcomp) and ipmitool; pyghmi for its column.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import ipmi_sim  # noqa: E402

PASSWORD = "bench-pass-2291"


_READ = """
import sys, time
from toolkit.health.bmc import ipmi
from toolkit.health.bmc.target import BmcTarget
target = BmcTarget("ipmi", "127.0.0.1", int(sys.argv[1]), "ADMIN", sys.argv[3], timeout=120.0)
start = time.monotonic()
reading = ipmi.read_ipmi(target, sys.argv[2])
print(time.monotonic() - start, len(reading.sensors))
"""


def one_read(port: int, tool: str, cache: Path, cold: bool) -> float:
    """One read in its own process, as `toolkit health` does it (pyghmi keeps sessions per process)."""
    if cold:
        shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "TOOLKIT_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-c", _READ, str(port), tool, PASSWORD]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
    took, count = proc.stdout.split()
    assert int(count) == 56, proc.stdout
    return float(took)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.02, help="seconds added each way per packet")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tools", default="ipmitool,pyghmi")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "bmc"
        work.mkdir()
        sim = ipmi_sim.Bmc(work, password=PASSWORD, sensors=ipmi_sim.board_56(), sel=[], delay=args.delay)
        sim.start()
        try:
            print(
                f"simulated 56-sensor board, {args.delay * 1000:g} ms added each way per packet,"
                f" {args.runs} runs"
            )
            for tool in args.tools.split(","):
                for cold in (True, False):
                    times = [
                        one_read(sim.port, tool, Path(tmp) / f"cache-{tool}", cold) for _ in range(args.runs)
                    ]
                    label = "cold (no SDR cache)" if cold else "warm (SDR cached)"
                    print(
                        f"{tool:9s} {label:20s} median {statistics.median(times):6.2f} s"
                        f"  min {min(times):6.2f} s  max {max(times):6.2f} s"
                    )
        finally:
            sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
