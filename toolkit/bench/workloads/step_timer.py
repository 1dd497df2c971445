"""The step timer of the TRL training loads (`workloads/train.py`): optimizer steps timed end to end, data
loading included, the device synchronised at each edge; warm-up steps kept apart from the measured ones."""

from __future__ import annotations

import time


class _StepTimerBase:
    """Times optimizer steps end to end (data loading included), synchronising the device."""

    def __init__(self, ctx, rec, warmup: int, total: int):
        self.ctx, self.rec, self.warmup, self.total = ctx, rec, warmup, total
        self.measured: list[tuple[float, int]] = []
        self._t = self._tokens = None

    def on_train_begin(self, args, state, control, **kw):
        self.ctx.sync()
        self._t, self._tokens = time.perf_counter(), state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kw):
        self.ctx.sync()
        now = time.perf_counter()
        dt, n = now - self._t, state.num_input_tokens_seen - self._tokens
        self._t, self._tokens = now, state.num_input_tokens_seen
        step = state.global_step
        if step <= self.warmup:
            self.rec.warmup.setdefault("step_time_seconds", []).append(dt)
        else:
            self.measured.append((dt, n))
        self.rec.metrics["steps_completed"] = step
        self.ctx.progress(step, self.total)

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            loss = round(float(logs["loss"]), 6)
            if state.global_step <= self.warmup:
                self.rec.warmup.setdefault("loss_per_step", []).append(loss)
            else:
                self.rec.metrics["loss_per_step"].append(loss)


def make_step_timer(ctx, rec, warmup: int, total: int):
    """A `TrainerCallback` built on first use, so importing this module stays free of transformers."""
    from transformers import TrainerCallback

    class StepTimer(_StepTimerBase, TrainerCallback):
        pass

    return StepTimer(ctx, rec, warmup, total)
