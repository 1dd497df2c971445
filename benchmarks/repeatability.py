"""Are `toolkit bench`'s verdicts repeatable? N runs back to back on the machine as it is ("idle"), then N
runs with K CPU-bound processes competing ("loaded").

    .venv/bin/python benchmarks/repeatability.py                 # 10 + 10 default CPU runs (scale small)
    .venv/bin/python benchmarks/repeatability.py --quick         # CI: 3 + 3 runs, --scale tiny, 3 loads
    .venv/bin/python benchmarks/repeatability.py --runs 5 --spinners 2 --scale tiny

Targets (issue 18): idle, every run gives the same verdict and each headline figure's coefficient of
variation across the runs is under 5 %; loaded, no load and no check is `fail` (a shortfall is
`inconclusive` with the evidence). The table shows per run the verdict and whether the machine was
busy; per headline figure the median, min, max and CV across the runs and the mean CV within a run
(the samples' spread each run records); how many checks failed and how many were inconclusive.
The JSON goes to benchmarks/results/repeatability-<stamp>.json (or --json PATH).

"Idle" is the machine as it is: the runs themselves record what else ran (`contention`), and the table
says how many of the idle runs found the machine busy, so a reading on a shared machine is told apart.
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
sys.path.insert(0, str(REPO))

from toolkit.atomic import write_text_atomic  # noqa: E402
from toolkit.glossary import utc_now  # noqa: E402

HEADLINE = (
    ("matmul", "flops_per_second"),
    ("memory_bandwidth", "bandwidth_bytes_per_second"),
    ("kto_lora", "tokens_per_second"),
    ("inference", "prefill_tokens_per_second_batch1"),
    ("inference", "decode_tokens_per_second_batch1"),
    ("inference", "prefill_tokens_per_second_batch8"),
    ("inference", "decode_tokens_per_second_batch8"),
)
TARGET_CV = 0.05


def bench_once(args, folder: Path) -> dict:
    out = folder / f"run-{time.monotonic_ns()}.json"
    cmd = [sys.executable, "-m", "toolkit", "bench", "--json", str(out), "--results-dir", str(folder / "r")]
    if args.scale:
        cmd += ["--scale", args.scale]
    if args.workloads:
        cmd += ["--workloads", args.workloads]
    t0 = time.monotonic()
    proc = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"}, check=False
    )
    doc = json.loads(out.read_text()) if out.exists() else {}
    return {"exit_code": proc.returncode, "seconds": round(time.monotonic() - t0, 1), "doc": doc}


def summarize(runs: list[dict]) -> dict:
    docs = [r["doc"] for r in runs if r["doc"]]
    checks = [
        (res["workload"], k, e["status"])
        for d in docs
        for res in d["results"]
        for k, e in res["expected"].items()
    ]
    figures = {}
    for load, metric in HEADLINE:
        values, within = [], []
        for d in docs:
            res = next((r for r in d["results"] if r["workload"] == load), None)
            if res is None or metric not in res["metrics"]:
                continue
            values.append(res["metrics"][metric])
            if metric in res.get("spread", {}):
                within.append(res["spread"][metric]["cv"])
        if values:
            mean = statistics.fmean(values)
            figures[f"{load}.{metric}"] = {
                "n": len(values),
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
                "cv": statistics.stdev(values) / mean if len(values) > 1 and mean else 0.0,
                "mean_within_run_cv": statistics.fmean(within) if within else None,
            }
    return {
        "verdicts": [r["doc"].get("verdict", f"no result (exit {r['exit_code']})") for r in runs],
        "exit_codes": [r["exit_code"] for r in runs],
        "seconds": [r["seconds"] for r in runs],
        "busy_runs": sum(
            1 for d in docs if d["contention"]["busy"] or any(x["contention"]["busy"] for x in d["results"])
        ),
        "checks_fail": sum(1 for c in checks if c[2] == "fail"),
        "checks_inconclusive": sum(1 for c in checks if c[2] == "inconclusive"),
        "checks_unstable": sum(1 for c in checks if c[2] == "unstable"),
        "loads_fail": sum(1 for d in docs for r in d["results"] if r["status"] == "fail"),
        "loads_inconclusive": sum(1 for d in docs for r in d["results"] if r["status"] == "inconclusive"),
        "figures": figures,
    }


def run_phase(args, folder: Path, spinners: int) -> list[dict]:
    procs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
        for _ in range(spinners)
    ]
    try:
        runs = []
        for i in range(args.runs):
            runs.append(bench_once(args, folder))
            r = runs[-1]
            print(
                f"  {'loaded' if spinners else 'idle'} run {i + 1}/{args.runs}: "
                f"{r['doc'].get('verdict', '-')} (exit {r['exit_code']}, {r['seconds']} s)",
                file=sys.stderr,
            )
        return runs
    finally:
        for p in procs:
            p.kill()
            p.wait()


def print_table(name: str, summary: dict) -> None:
    print(f"\n{name}: verdicts {', '.join(summary['verdicts'])}  (busy runs: {summary['busy_runs']})")
    print(
        f"  checks: fail {summary['checks_fail']}, inconclusive {summary['checks_inconclusive']}, "
        f"unstable {summary['checks_unstable']}; loads: fail {summary['loads_fail']}, "
        f"inconclusive {summary['loads_inconclusive']}"
    )
    print(f"  {'figure':<52} {'median':>11} {'min':>11} {'max':>11} {'CV':>7} {'within':>7}")
    for key, f in summary["figures"].items():
        within = f"{f['mean_within_run_cv']:.1%}" if f["mean_within_run_cv"] is not None else "-"
        print(
            f"  {key:<52} {f['median']:>11.4g} {f['min']:>11.4g} {f['max']:>11.4g} "
            f"{f['cv']:>7.1%} {within:>7}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--spinners", type=int, default=2, help="CPU-bound processes in the loaded phase")
    parser.add_argument("--scale", choices=("tiny", "small", "full"))
    parser.add_argument("--workloads")
    parser.add_argument(
        "--quick", action="store_true", help="3 + 3 runs at tiny scale, matmul/bandwidth/inference"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.runs, args.scale = 3, "tiny"
        args.workloads = args.workloads or "matmul,memory_bandwidth,inference"
    with tempfile.TemporaryDirectory() as tmp:
        idle = summarize(run_phase(args, Path(tmp), 0))
        loaded = summarize(run_phase(args, Path(tmp), args.spinners))
    print_table(f"idle ({args.runs} runs)", idle)
    print_table(f"loaded ({args.runs} runs, {args.spinners} spinners)", loaded)
    same = len(set(idle["verdicts"])) == 1
    stable = all(f["cv"] < TARGET_CV for f in idle["figures"].values())
    print(
        f"\nidle: same verdict every run: {'yes' if same else 'NO'}; every headline CV < {TARGET_CV:.0%}: "
        f"{'yes' if stable else 'NO'}.  loaded: fail checks {loaded['checks_fail']} (target 0)"
    )
    doc = {
        "benchmark": "repeatability",
        "at": utc_now(),
        "arguments": {k: v for k, v in vars(args).items() if k != "json"},
        "cpu_count": os.cpu_count(),
        "idle": idle,
        "loaded": loaded,
        "targets": {
            "idle_same_verdict": same,
            "idle_cv_below_5pct": stable,
            "loaded_no_fail": not loaded["checks_fail"],
        },
    }
    path = args.json or REPO / "benchmarks" / "results" / f"repeatability-{utc_now().replace(':', '')}.json"
    write_text_atomic(path, json.dumps(doc, indent=2) + "\n")
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
