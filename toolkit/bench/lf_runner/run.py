"""Run one LLaMA-Factory training with toolkit's step timer as a callback (inside LLaMA-Factory's venv).

    .venv-llamafactory/bin/python run.py SPEC.json

SPEC.json: {"args": {LLaMA-Factory's arguments}, "events": "PATH.jsonl"}. The arguments go to
`llamafactory.train.tuner.run_exp`, the function `llamafactory-cli train FILE.yaml` calls, so the run is
LLaMA-Factory's own: its data pipeline, model loading, adapters and trainers. The callback appends one
JSON line per event to the events file and flushes it at once, so a run that fails keeps every step it
finished:

    {"event": "start", "baseline_memory_bytes": N, "versions": {...}}
    {"event": "train_begin", "trainable_params": N, "parameters": N, "dtype": "torch.float32", ...}
    {"event": "step", "step": 1, "seconds": 0.41, "tokens": 212}
    {"event": "log", "step": 1, "loss": 0.69}
    {"event": "end", "peak_memory_bytes": N, ...}
    {"event": "error", "type": "ValueError", "message": "..."}   (then the traceback on stderr)

Standalone on purpose: toolkit is not installed in this environment, and this file imports nothing from it.
"""

from __future__ import annotations

import json
import sys
import time


def _status_bytes(field: str) -> int | None:
    """A kB field of /proc/self/status in bytes (VmHWM: peak RSS since the process started)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Events:
    def __init__(self, path: str):
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (open for the whole run)

    def write(self, event: str, **fields) -> None:
        self.file.write(json.dumps({"event": event, **fields}) + "\n")
        self.file.flush()


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _dataset_context(dataset) -> dict:
    """KTO: mean tokens per training sequence and the KL batch's share (LLaMA-Factory's KTO columns);
    the same figures toolkit's TRL path takes from TRL's tokenized dataset."""
    try:
        columns = dataset.column_names
        if "kl_input_ids" not in columns:
            return {}
        batch = [len(x) for x in dataset["input_ids"]]
        kl = [len(x) for x in dataset["kl_input_ids"]]
    except Exception:  # best effort: a wrapped or streamed dataset has no columns to read
        return {}
    return {"mean_tokens_per_sequence": sum(batch) / len(batch), "kl_token_ratio": sum(kl) / sum(batch)}


def make_timer(events: Events):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Optimizer steps timed end to end (data loading included), the device synchronised."""

        def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kw):
            info = {}
            if model is not None:
                params = list(model.parameters())
                info = {
                    "trainable_params": sum(p.numel() for p in params if p.requires_grad),
                    "parameters": sum(p.numel() for p in params),
                    "dtype": str(params[0].dtype) if params else None,
                    "trainable_dtype": next((str(p.dtype) for p in params if p.requires_grad), None),
                }
            if train_dataloader is not None:
                info.update(_dataset_context(getattr(train_dataloader, "dataset", None)))
            events.write("train_begin", **info)
            _sync()
            self.t, self.tokens = time.perf_counter(), state.num_input_tokens_seen or 0

        def on_step_end(self, args, state, control, **kw):
            _sync()
            now, seen = time.perf_counter(), state.num_input_tokens_seen or 0
            events.write("step", step=state.global_step, seconds=now - self.t, tokens=seen - self.tokens)
            self.t, self.tokens = now, seen

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                events.write("log", step=state.global_step, loss=float(logs["loss"]))

        def on_train_end(self, args, state, control, **kw):
            import torch

            peak = {"peak_memory_bytes": _status_bytes("VmHWM"), "scope": "process"}
            if torch.cuda.is_available():
                torch.cuda.synchronize()
                peak = {
                    "peak_memory_bytes": int(torch.cuda.max_memory_allocated()),
                    "peak_memory_reserved_bytes": int(torch.cuda.max_memory_reserved()),
                    "peak_rss_bytes": _status_bytes("VmHWM"),
                    "scope": "cuda",
                }
            events.write("end", steps=state.global_step, **peak)

    return StepTimer()


def main(spec_path: str) -> int:
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    events = Events(spec["events"])
    from importlib.metadata import version

    import torch  # noqa: F401  (imported before the baseline: the interpreter and libraries are not the run)
    from llamafactory.train.tuner import run_exp

    versions = {p: version(p) for p in ("llamafactory", "torch", "transformers", "trl", "peft", "accelerate")}
    events.write("start", baseline_memory_bytes=_status_bytes("VmRSS"), versions=versions)
    try:
        run_exp(args=spec["args"], callbacks=[make_timer(events)])
    except BaseException as exc:
        events.write("error", type=type(exc).__name__, message=str(exc)[:2000])
        raise
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: run.py SPEC.json", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
