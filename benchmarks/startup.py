"""Start-up time of `toolkit --help` as a ratio to a bare `python -c pass`. Goal: 3x or less.

    .venv/bin/python benchmarks/startup.py [--runs 30]

Both commands run alternately in the same loop, so machine noise hits both alike;
the ratio of medians is the figure to compare across machines. Also reports
`toolkit gpus` (which reads the catalog and probes NVML), for reference.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "toolkit --help": [sys.executable, "-m", "toolkit", "--help"],
    "toolkit gpus": [sys.executable, "-m", "toolkit", "gpus", "--json"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.runs):
        for name, cmd in COMMANDS.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["python -c pass"])
    print(f"{'command':<16} {'median ms':>10} {'p90 ms':>8} {'ratio':>6}")
    for name, values in times.items():
        med = statistics.median(values)
        p90 = statistics.quantiles(values, n=10)[-1]
        print(f"{name:<16} {med * 1e3:>10.1f} {p90 * 1e3:>8.1f} {med / base:>6.2f}")
    ratio = statistics.median(times["toolkit --help"]) / base
    print(f"toolkit --help start-up ratio: {ratio:.2f}x (goal <= 3x)")
    return 0 if ratio <= 3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
