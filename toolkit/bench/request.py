"""What the user asked `toolkit bench` for: one frozen, typed request built once from the command line.

Every option is a field here, and every field says which other process it travels to: the ranks of
a `--gpus N` run (`rank`) and the nodes of a fleet run (`node`). `to_argv` rebuilds a command line
from the fields for either, so the launcher and the fleet controller cannot disagree on how an
option is passed on, and a new option is passed on by declaring it once.

Checks that need nothing heavy run in `check` (usage errors, exit 2, before anything runs); what
the run computes from the request (the GPU class found, the loads, the scale) lives in `setup`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields, replace

from toolkit.errors import UsageError

RANK, NODE = "rank", "node"


def _opt(flag: str | None, *to: str, default=None, dest: str | None = None):
    """A request field: its option, the processes it is passed on to, and argparse's name for it."""
    return field(default=default, metadata={"flag": flag, "to": to, "dest": dest})


@dataclass(frozen=True)
class BenchRequest:
    gpu_class: str | None = _opt("--gpu", RANK, NODE, dest="profile")  # also --profile
    allow_mismatch: bool = _opt("--allow-mismatch", RANK, NODE, default=False)
    workloads: str | None = _opt("--workloads", RANK, NODE)
    burn_in: str | None = _opt("--burn-in", RANK, NODE)
    scale: str | None = _opt("--scale", RANK, NODE)
    threads: int | None = _opt("--threads", RANK, NODE)
    kto_loss: str | None = _opt("--kto-loss", RANK, NODE)
    recipes: tuple[str, ...] = _opt("--recipe", RANK, NODE, default=())
    arch: str | None = _opt("--arch", RANK, NODE)
    model: str | None = _opt("--model", RANK, NODE)
    engine: str = _opt("--engine", NODE, default="trl")  # trl | llamafactory (not with --gpus)
    qdrant_url: str | None = _opt("--qdrant-url", RANK, NODE)
    qdrant_api_key_env: str | None = _opt("--qdrant-api-key-env", RANK)  # a controller's variable stays there
    gpus: int | None = _opt("--gpus", NODE)  # the launcher's own: its ranks run one process each
    seed: int = _opt("--seed", RANK, NODE, default=0)
    overrides: tuple[str, ...] = _opt("--set", RANK, NODE, default=())
    # an acceptance run: refuse to start on a busy machine (the launcher of a --gpus N run checks once)
    strict: bool = _opt("--strict", NODE, default=False)
    # where the result goes: the launcher and the fleet controller name it for their processes
    json: str | None = _opt("--json")
    results_dir: str | None = _opt("--results-dir", RANK)
    # with an earlier result (single-process runs; a fleet compares on the controller)
    compare: str | None = _opt("--compare", RANK)
    threshold: str | None = _opt("--threshold", RANK)
    fail_on_regression: bool = _opt("--fail-on-regression", RANK, default=False)
    # what to do instead of a run
    list_only: bool = _opt("--list", default=False, dest="list")
    plan: bool = _opt("--plan", default=False)
    distributed_run: str | None = _opt("--distributed-run")  # internal: a rank of a --gpus run
    # fleet runs (-i INVENTORY), read by the controller
    inventory: str | None = _opt("--inventory")
    limit: str | None = _opt("--limit")
    forks: int = _opt("--forks", default=5)
    host_timeout: float | None = _opt("--host-timeout")
    connect_timeout: float = _opt("--connect-timeout", default=10.0)
    vault_password_file: str | None = _opt("--vault-password-file")
    strict_host_keys: bool = _opt("--strict-host-keys", default=False)
    debug: bool = _opt(None, default=False)  # the global --debug (or TOOLKIT_DEBUG=1)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BenchRequest:
        """The request of a parsed `toolkit bench` command line."""
        values = {}
        for f in fields(cls):
            dest = f.metadata["dest"] or f.name
            if hasattr(args, dest):
                value = getattr(args, dest)
                values[f.name] = tuple(value) if isinstance(value, list) else value
        return cls(**values)

    def but(self, **changes) -> BenchRequest:
        """The same request with some fields changed (a fleet node's own class, say)."""
        return replace(self, **changes)

    def to_argv(self, to: str) -> list[str]:
        """The options of this request that travel `to` RANK or NODE, as a `toolkit bench` command line;
        a field at its default is left out."""
        argv: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if to not in f.metadata["to"] or value == f.default or value is None:
                continue
            flag = f.metadata["flag"]
            if isinstance(value, bool):
                argv.append(flag)
            elif isinstance(value, tuple):
                for item in value:
                    argv += [flag, str(item)]
            else:
                argv += [flag, str(value)]
        return argv

    def rank_argv(self) -> list[str]:
        """What each rank of a `--gpus N` run is started with (the launcher adds --distributed-run)."""
        return self.to_argv(RANK)

    @property
    def set_assignments(self) -> list[str]:
        """`--set LOAD.FIELD=VALUE` for the loads' settings (recipe.* are the recipes')."""
        return [a for a in self.overrides if not a.startswith("recipe.")]

    @property
    def recipe_assignments(self) -> list[str]:
        return [a.partition(".")[2] for a in self.overrides if a.startswith("recipe.")]

    def check(self) -> None:
        """Usage errors that need nothing but the request, in the order a user meets them."""
        if self.kto_loss:
            from toolkit.bench.losses import resolve_loss

            resolve_loss(self.kto_loss)
        if self.threads is not None and self.threads < 1:
            raise UsageError("--threads must be at least 1")
        if self.workloads is not None and not self.workloads.replace(",", "").strip():
            raise UsageError(
                f"--workloads {self.workloads!r} names no load",
                hint="name loads, e.g. --workloads matmul,inference, or leave --workloads out for all",
            )
        if self.gpus is not None:
            from toolkit.bench.distributed import check_gpus

            check_gpus(self.gpus, None)  # N < 2 is refused before anything runs; N > GPUs once torch is up
            if self.burn_in:
                raise UsageError("--burn-in already runs on every visible GPU", hint="drop --gpus")
        if self.engine != "trl" and (not self.recipes or self.gpus is not None or self.burn_in is not None):
            raise UsageError(
                f"--engine {self.engine} runs the --recipe files, one process on one device",
                hint="add --recipe NAME|FILE.yaml; leave out --gpus and --burn-in",
            )
        if self.burn_in is not None:
            from toolkit.bench.burnin import parse_duration

            parse_duration(self.burn_in)
            if self.workloads or self.recipes:
                raise UsageError(
                    "--burn-in replaces the load list",
                    hint="drop --workloads/--recipe, or run the loads in a separate `toolkit bench`",
                )

    def check_compare(self) -> None:
        from toolkit.history import parse_threshold

        if not self.compare:
            if self.threshold or self.fail_on_regression:
                raise UsageError(
                    "--threshold and --fail-on-regression go with --compare", hint="add --compare last"
                )
            return
        parse_threshold(self.threshold)
        if self.gpus is not None:
            raise UsageError("--compare does not go with --gpus yet", hint="compare a single-process run")
