"""GPU acceptance run: everything a lent GPU should prove, in one prepared run of under 8 minutes.

    python benchmarks/gpu_acceptance.py                   # on the GPU machine: benchmarks/gpu_acceptance.sh
    python benchmarks/gpu_acceptance.py --tiny --out DIR  # the same logic at tiny scale on the CPU (CI)
        [--budget SECONDS] [--parts health,matmul,bandwidth,recipes,burnin,overhead]

Parts, in order, each in its own process with its share of the budget (docs/GPU_ACCEPTANCE.md):
  health     `toolkit health --json` (no BMC, Qdrant, Docker) and `nvidia-smi -q -x` where present
  matmul     the toolkit's matmul load against a plain torch.matmul loop, side by side in one process
  bandwidth  the same for the device copy loop
  recipes    every shipped recipe through `toolkit bench --recipe` (full size on a GPU), QLoRA included,
             with each recipe's memory plan against its measured peak
  burnin     `toolkit bench --burn-in 120` with NVML sampling
  overhead   the toolkit's run of a recipe against a bare TRL + PEFT script of the same load

Each part writes OUT/<part>.json when it ends (done, failed, timeout or skipped, with the reason) and
OUT/summary.json is rewritten after every part, so a run cut short keeps what it did. The default OUT is
benchmarks/results/<UTC date>-<device>/. Exit 0 when every part is done, 3 when one is not.
Nothing is downloaded: models are built locally with random weights, tokenizers are synthetic.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

from acceptance import micro, overhead, summary, toolkit_parts  # noqa: E402
from acceptance.budget import Budget, Plan, child_command, outcome_of, read_json, run_child, write_json  # noqa: E402

# (planned seconds, minimum seconds) per part: on a GPU at full size, and at tiny scale on the CPU
# (at tiny scale on a busy 2-core CI VM: health 1 s, matmul 10-14 s, bandwidth 8-18 s, recipes 25-75 s,
# burnin 7-11 s, overhead 26-78 s; the GPU figures are estimates until the first lent GPU run)
PLANS = {
    "health": ((15, 5), (10, 3)),
    "matmul": ((25, 10), (35, 8)),
    "bandwidth": ((20, 8), (30, 6)),
    "recipes": ((190, 60), (80, 30)),
    "burnin": ((145, 60), (20, 10)),
    "overhead": ((75, 45), (65, 30)),
}
PARTS = tuple(PLANS)
DEFAULT_BUDGET = {False: 465.0, True: 240.0}  # seconds; the device machine allows 8 minutes of script


def plan_of(name: str, tiny: bool) -> Plan:
    share, minimum = PLANS[name][1 if tiny else 0]
    return Plan(name, share, minimum)


def micro_part(name: str):
    def run(out: Path, tiny: bool, allowance: float) -> dict:
        result = out / "raw" / f"{name}.child.json"
        child = run_child(child_command(name, tiny, result), allowance, out / "raw" / f"{name}.log")
        got = read_json(result)
        if got is None:
            outcome = outcome_of(child, f"the {name} comparison")
            if outcome["status"] == "done":
                outcome = {"status": "failed", "reason": f"the {name} comparison wrote no result"}
            return {**outcome, "figures": {}}
        reason = None
        if child.timed_out or child.rc != 0:  # the rounds it finished were written as they ended
            then = outcome_of(child, name)["reason"]
            reason = f"{got['rounds']} of {got['rounds_planned']} rounds; then: {then}"
        return {"status": "done", "reason": reason, "figures": got, "files": [f"raw/{name}.child.json"]}

    return run


RUNNERS = {
    "health": toolkit_parts.health,
    "matmul": micro_part("matmul"),
    "bandwidth": micro_part("bandwidth"),
    "recipes": toolkit_parts.recipes,
    "burnin": toolkit_parts.burnin,
    "overhead": overhead.overhead,
}


def run_part(name: str, out: Path, tiny: bool, budget: Budget, later: list[Plan]) -> dict:
    """Run one part within its allowance (or skip it, with the reason) and write OUT/<name>.json."""
    from toolkit.glossary import utc_now

    allowance, why = budget.allowance(plan_of(name, tiny), later)
    rec: dict = {
        "part": name,
        "started_at": utc_now(),
        "tiny": tiny,
        "budget_left_seconds": round(budget.left(), 1),
        "allowance_seconds": None if allowance is None else round(allowance, 1),
    }
    t0 = time.monotonic()
    if allowance is None:
        rec.update(status="skipped", reason=why, figures={})
    else:
        print(f"gpu_acceptance: {name} (up to {allowance:.0f} s) ...", file=sys.stderr, flush=True)
        try:
            rec.update(RUNNERS[name](out, tiny, allowance))
        except KeyboardInterrupt:  # the run itself was stopped (SIGINT, or SIGTERM: see `run`)
            rec.update(status="timeout", reason="the run was stopped during this part", figures={})
            _close(rec, out, t0)
            raise
        except Exception as exc:  # one part's bug must not lose the other parts
            rec.update(
                status="failed", reason=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()
            )
    return _close(rec, out, t0)


def _close(rec: dict, out: Path, t0: float) -> dict:
    from toolkit.glossary import utc_now

    rec["seconds"] = round(time.monotonic() - t0, 1)
    rec["finished_at"] = utc_now()
    write_json(out / f"{rec['part']}.json", rec)
    return rec


def device_slug() -> tuple[str, str]:
    """(folder-name slug of this machine's accelerator, its description): `h200`, `2x-h100-sxm`, `cpu`."""
    from toolkit.catalog import load_catalog
    from toolkit.detect import detect

    found = detect()
    if not found.devices:
        return "cpu", found.summary
    name = found.devices[0].name
    match = load_catalog().match_device(name)
    slug = match.key if match else re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return (slug if len(found.devices) == 1 else f"{len(found.devices)}x-{slug}"), found.summary


def default_out(slug: str) -> Path:
    from datetime import UTC, datetime

    base = REPO / "benchmarks" / "results" / f"{datetime.now(UTC):%Y-%m-%d}-{slug}"
    out, n = base, 1
    while out.exists() and any(out.iterdir()):
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def environment() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for pkg in ("torch", "transformers", "trl", "peft", "bitsandbytes", "nvidia-ml-py"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.TimeoutExpired):
        commit = None
    return {
        "host": platform.node(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "commit": commit,
        "packages": versions,
    }


def run(args) -> int:
    from toolkit.glossary import utc_now

    parts = _parts(args.parts)
    slug, described = device_slug()
    out = Path(args.out) if args.out else default_out(slug + ("-tiny" if args.tiny else ""))
    out.mkdir(parents=True, exist_ok=True)
    budget = Budget(args.budget or DEFAULT_BUDGET[args.tiny])
    doc = {
        "started_at": utc_now(),
        "finished_at": None,
        "device": slug,
        "device_description": described,
        "tiny": args.tiny,
        "budget_seconds": budget.total,
        "out": str(out),
        "environment": environment(),
        "parts": [{"part": p, "status": "pending"} for p in parts],
        "targets": [],
    }
    write_json(out / "summary.json", doc)
    records: dict = {}
    signal.signal(signal.SIGTERM, _stop)
    try:
        for i, name in enumerate(parts):
            later = [plan_of(p, args.tiny) for p in parts[i + 1 :]]
            records[name] = run_part(name, out, args.tiny, budget, later)
            _note(doc, i, records, args.tiny, budget, out)
    except KeyboardInterrupt:
        for i, name in enumerate(parts):
            if name not in records:
                why = "the run was stopped before this part"
                records[name] = read_json(out / f"{name}.json") or {
                    "part": name,
                    "status": "skipped",
                    "reason": why,
                    "figures": {},
                }
                _note(doc, i, records, args.tiny, budget, out)
    doc["finished_at"] = utc_now()
    write_json(out / "summary.json", doc)
    print(summary.table(doc, records))
    return 0 if all(p["status"] == "done" for p in doc["parts"]) else 3


def _note(doc: dict, i: int, records: dict, tiny: bool, budget: Budget, out: Path) -> None:
    """Part `i` ended: its line in summary.json, rewritten now (a run cut short keeps it)."""
    doc["parts"][i] = summary.brief(records[doc["parts"][i]["part"]])
    doc["targets"] = summary.targets(records, judged=not tiny)
    doc["spent_seconds"] = round(budget.spent(), 1)
    write_json(out / "summary.json", doc)


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM (timeout's default) ends the run as Ctrl-C does: parts written


def _parts(text: str | None) -> list[str]:
    if not text:
        return list(PARTS)
    asked = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in asked if p not in PARTS]
    if unknown or not asked:
        raise SystemExit(
            f"gpu_acceptance: error: unknown part(s) {', '.join(unknown) or '(none)'}; "
            f"parts: {', '.join(PARTS)}"
        )
    return [p for p in PARTS if p in asked]


def child(args) -> int:
    """One part's measuring code, in the fresh process `run_child` started."""
    from toolkit.bench.setup import _quiet_libraries

    _quiet_libraries()
    result = Path(args.child_out)
    if args.child == "bare":
        return overhead.main_bare(Path(args.request), result)
    measure = {"matmul": micro.matmul, "bandwidth": micro.bandwidth}[args.child]
    measure(args.tiny, lambda found: write_json(result, found))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny sizes and seconds-long burn-in (the CPU, CI)")
    p.add_argument("--out", help="results folder (default: benchmarks/results/<UTC date>-<device>/)")
    p.add_argument("--budget", type=float, help="seconds for the whole run (default 465; 240 with --tiny)")
    p.add_argument("--parts", help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--child", choices=("matmul", "bandwidth", "bare"), help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    p.add_argument("--request", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.budget is not None and not args.budget > 0:
        p.error("--budget: a positive number of seconds")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded, ever
    return child(args) if args.child else run(args)


if __name__ == "__main__":
    raise SystemExit(main())
