"""The run document: the one object that writes a `toolkit bench` result.

A run's JSON document used to be a dict that seven modules edited; now every change goes through a
method here: the start (`start`), a finished load (`add_result`), the running load's progress
(`progress`), the burn-in's running record (`replace_running`), a `--gpus N` run's shape
(`annotate_distributed`), the end (`finish`), and the comparison with an earlier run. Saving is
atomic, and only the process that owns the file (rank 0 of a `--gpus N` run) writes it, so a stop at
any moment leaves the loads that finished on disk.

A save that fails (a disk that fills during the run) does not end the run: the file keeps its last whole
version, the document stays in memory, the load whose save failed carries a note saying so, and the next
save tries again. `save_error` says why the last save failed and `unsaved` which loads the file lacks.
"""

from __future__ import annotations

import json
from pathlib import Path

from toolkit.atomic import write_text_atomic
from toolkit.glossary import CLASS_KEY, Verdict, gpu_class_of, utc_now, verdict_of

# 2: the GPU class section is `gpu_class` (1 called it `profile`; both are read)
SCHEMA_VERSION = 2


def to_json(doc: dict) -> str:
    return json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n"


def save_json(doc: dict, path: str | Path) -> Path:
    return write_text_atomic(path, to_json(doc))


class RunDocument:
    """One run's result document; `path` is where it is saved, `writer` whether this process saves it."""

    def __init__(self, data: dict, path: Path, *, writer: bool = True, peaks=None):
        self._data = data
        self.path = Path(path)
        self.writer = writer
        self._peaks = peaks  # the run's Peaks: the cpu profile measures them as it goes
        self.save_error: str | None = None  # why the last save failed; None once one succeeds
        self._saved_results = 0  # how many results the file on disk holds

    @classmethod
    def start(
        cls,
        *,
        host: str,
        started_at: str,
        path: Path,
        gpu_class: dict,
        environment: dict,
        configuration: dict,
        writer: bool = True,
        peaks=None,
    ) -> RunDocument:
        data = {
            "schema_version": SCHEMA_VERSION,
            "host": host,
            "started_at": started_at,
            "finished_at": None,
            CLASS_KEY: gpu_class,
            "environment": environment,
            "configuration": configuration,
            "results": [],
            "verdict": Verdict.INCOMPLETE.value,
            "complete": False,
        }
        return cls(data, path, writer=writer, peaks=peaks)

    @classmethod
    def read(cls, path: Path) -> RunDocument | None:
        """A document another process is writing (a `--gpus N` launcher follows rank 0's), or None while
        it is not there or not whole yet."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return cls(data, path, writer=True)

    # -- reading ---------------------------------------------------------------------------------

    def as_dict(self) -> dict:
        """The document as the schema has it (a live view: do not edit it, call a method)."""
        return self._data

    @property
    def gpu_class(self) -> dict:
        return gpu_class_of(self._data)

    @property
    def results(self) -> list[dict]:
        return self._data["results"]

    @property
    def verdict(self) -> str:
        return self._data["verdict"]

    @property
    def complete(self) -> bool:
        return bool(self._data["complete"])

    @property
    def planned(self) -> list[str]:
        return self._data["configuration"]["workloads"]

    @property
    def running(self) -> dict | None:
        return self._data.get("in_progress")

    # -- writing ---------------------------------------------------------------------------------

    @property
    def unsaved(self) -> list[str]:
        """The loads that finished but are not in the file on disk (their saves failed)."""
        return [r["workload"] for r in self.results[self._saved_results :]]

    def save(self) -> bool:
        """Write the document atomically; False when it could not be written (`save_error` says why,
        naming the file): the run goes on and the file keeps its last whole version."""
        if not self.writer:
            return True
        if self._peaks is not None:
            self._data[CLASS_KEY]["peaks"] = self._peaks.as_dict()
        try:
            save_json(self._data, self.path)
        except OSError as err:
            self.save_error = f"cannot write {err.filename or self.path}: {err.strerror or err}"
            return False
        self.save_error = None
        self._saved_results = len(self.results)
        return True

    def progress(self, workload: str, completed: int, total: int) -> None:
        """The running load's progress, shown in the saved file (the caller decides how often)."""
        self._data["in_progress"] = {"workload": workload, "completed": completed, "total": total}
        self.save()

    def add_result(self, result: dict) -> bool:
        """A finished load, saved at once; False when the save failed, and the load then says so in its
        notes (shown below the table, and in the file once a later save succeeds)."""
        self._data.pop("in_progress", None)
        self._data["results"].append(result)
        if self.save():
            return True
        result.setdefault("notes", []).append(f"result not saved when the load finished: {self.save_error}")
        return False

    def replace_running(self, result: dict | None) -> None:
        """The burn-in's record so far (saved after every interval), or None once it is handed over
        to `add_result` as a finished load."""
        self._data["results"] = [result] if result is not None else []
        self._saved_results = min(self._saved_results, len(self.results))
        if result is not None:
            self.save()

    def annotate_distributed(self, world_size: int, distributed: dict) -> None:
        self._data["configuration"]["gpus"] = world_size
        self._data["distributed"] = distributed

    def set_comparison(self, comparison: dict) -> None:
        self._data["comparison"] = comparison

    def set_contention(self, contention: dict) -> None:
        """The competing load observed before the first load (toolkit.bench.contention)."""
        self._data["contention"] = contention

    def finish(self, *, interrupted: bool = False, failed: bool = False, requested=()) -> str:
        """Close the run: its verdict from the loads' statuses, whether it is complete, when it ended,
        and the planned loads that did not run. `failed`: a `--gpus N` run whose ranks did not all
        finish, which is never a passing run. `requested`: the names of the loads the user named, whose
        skip makes the run incomplete (glossary.verdict_of). Saves (see `save_error`) and returns the
        verdict."""
        data = self._data
        data.pop("in_progress", None)
        named = [r["status"] for r in data["results"] if r["workload"] in requested]
        verdict = verdict_of((r["status"] for r in data["results"]), interrupted, named)
        if failed and verdict not in (Verdict.FAIL, Verdict.ERROR, Verdict.INTERRUPTED):
            verdict = Verdict.ERROR
        data["verdict"] = str(verdict)
        data["complete"] = not (interrupted or failed)
        data["finished_at"] = utc_now()
        not_run = self._not_run()
        if not_run:
            data["not_run"] = not_run
        self.save()
        return data["verdict"]

    def _not_run(self) -> list[str]:
        planned, results = self.planned, self.results
        if not results:
            return list(planned)
        last = results[-1]["workload"]
        if last in planned:
            return planned[planned.index(last) + 1 :]
        return planned[len(results) :]


def failed_result(workload: str, status: str, kind: str, message: str, **extra) -> dict:
    """A result for a load that ended without a record of its own (its ranks died), in the schema's
    shape."""
    result = {
        "workload": workload,
        "status": status,
        "metrics": {},
        "expected": {},
        "warmup": {},
        "config": {},
        "flops": {},
        "notes": [],
        "duration_seconds": None,
        "error": {"kind": kind, "message": message},
    }
    result.update(extra)
    return result
