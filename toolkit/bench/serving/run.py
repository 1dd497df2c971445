"""`toolkit bench --serve URL`: probe the server, warm up (the first request is the cold start), run the
single stream and the concurrency sweep (and Poisson arrivals), judge each level, write the document after
every level (atomically, so a stop keeps what was measured) and print the table.

Exit codes: 0 pass or warn; 1 a validity check or the SLO failed; 2 usage (bad option, model not served,
the server refused the request); 3 the server could not be reached; 130 interrupted.
"""

from __future__ import annotations

import json
import threading
import time

from toolkit.bench.serving import arrivals, checks, expectations, prompts, server_info
from toolkit.bench.serving.api import forces_length, request_for
from toolkit.bench.serving.client import Target, stream_request
from toolkit.bench.serving.metrics import DEFINITIONS, level_metrics, server_side
from toolkit.bench.serving.options import ServeOptions
from toolkit.errors import EXIT_CHECK_FAILED, EXIT_OK, EXIT_USAGE, ToolkitError, UsageError
from toolkit.glossary import utc_now

EXIT_UNREACHABLE = 3
SCHEMA = 1


def unreachable(target: Target, detail: str) -> ToolkitError:
    return ToolkitError(
        f"cannot reach the server at {target.origin}: {detail}",
        hint="is it running and listening there? check the URL's host and port",
        exit_code=EXIT_UNREACHABLE,
        ref="unreachable",
    )


class ServingRun:
    def __init__(self, opts: ServeOptions, target: Target):
        self.opts, self.target = opts, target
        self.stop = threading.Event()
        self.api = opts.api
        self.model = opts.model
        self.info: server_info.ServerInfo | None = None
        self.prompts: list[str] = []
        self.next_prompt = 0
        self.doc = {
            "kind": "serving",
            "schema": SCHEMA,
            "url": target.origin + target.prefix,
            "api": None,
            "model": None,
            "started": utc_now(),
            "finished": None,
            "complete": False,
            "status": "incomplete",
            "exit_code": None,
            "settings": {
                "output_tokens": opts.output_tokens,
                "input_words": opts.input_tokens if not opts.prompts else None,
                "prompts_file": opts.prompts,
                "requests_per_level": opts.requests,
                "warmup": opts.warmup,
                "slo_s": opts.slo,
                "seed": opts.seed,
            },
            "definitions": DEFINITIONS,
            "server": None,
            "cold_start": None,
            "levels": [],
            "saturation": None,
            "expectations": None,
            "warnings": [],
        }

    # -- before the load --------------------------------------------------------------------------
    def start(self) -> None:
        try:
            if self.api == "auto":
                self.api = server_info.detect_api(self.target)
            self.info = server_info.probe(self.target, self.api)
        except OSError as err:
            raise unreachable(self.target, err.strerror or type(err).__name__) from None
        self._choose_model()
        self.doc.update(api=self.api, model=self.model, server=self.info.as_json())
        partial = any((m.get("size_vram") or 0) < (m.get("size") or 0) for m in self.info.offload)
        gpu_free = expectations.local_gpu_free_bytes(self.target.host) if partial else None
        self.doc["warnings"] += expectations.offload_warnings(self.info.offload, gpu_free)
        needed = self._requests_needed()
        if self.opts.prompts:
            self.prompts = prompts.from_file(self.opts.prompts, needed)
        else:
            self.prompts = prompts.synthetic(needed, self.opts.input_tokens, self.opts.seed)

    def _choose_model(self) -> None:
        models = self.info.models
        if self.model:
            names = set(models) | {m.removesuffix(":latest") for m in models}
            if models and self.model not in names:
                raise UsageError(
                    f"the server at {self.target.origin} does not serve the model {self.model!r}",
                    hint="it serves: " + ", ".join(models[:10]),
                )
        elif models:
            self.model = models[0]
        elif self.api == "ollama":
            raise UsageError(
                f"the Ollama server at {self.target.origin} has no model",
                hint="ollama pull NAME, or --model NAME",
            )
        self.info.use_model(self.model)

    def _plan(self) -> list[int]:
        if self.opts.levels:
            return list(self.opts.levels)
        return arrivals.sweep_levels(self.info.slots if self.info else None, self.opts.max_concurrency)

    def _per_level(self, concurrency: int) -> int:
        return max(self.opts.requests, 2 * concurrency)

    def _requests_needed(self) -> int:
        total = self.opts.warmup + sum(self._per_level(c) for c in self._plan())
        return total + (len(arrivals.FRACTIONS) * self.opts.requests if self.opts.poisson else 0)

    # -- requests ---------------------------------------------------------------------------------
    def send(self, index: int, due: float | None):
        path, body = request_for(self.api, self.model, self.prompts[index], self.opts.output_tokens)
        outcome = stream_request(self.target, self.api, path, body, self.opts.request_timeout, index)
        outcome.scheduled = due
        return outcome

    def take(self, count: int) -> list[int]:
        indices = list(range(self.next_prompt, self.next_prompt + count))
        self.next_prompt += count
        return indices

    def warm_up(self) -> None:
        for n, index in enumerate(self.take(self.opts.warmup)):
            outcome = self.send(index, None)
            if outcome.status == "unreachable":
                raise unreachable(self.target, outcome.detail)
            if outcome.status == "http_error" and outcome.http_status in (400, 404, 422):
                raise UsageError(
                    f"the server refused the {self.api} request: {outcome.detail}",
                    hint="check --api and --model (the model name as the server lists it)",
                )
            if n == 0:
                first = outcome.first_token
                self.doc["cold_start"] = {
                    "status": outcome.status,
                    "ttft_s": first - outcome.sent if first is not None else None,
                    "e2e_s": outcome.end - outcome.sent,
                    "load_duration_s": outcome.stream.load_duration_s,
                }

    def run_level(
        self, mode: str, concurrency: int, rate: float | None = None, count: int | None = None
    ) -> dict:
        before = server_info.scrape(self.target) if self.info.metrics else None
        indices = self.take(count or self._per_level(concurrency))
        if rate:
            outcomes = arrivals.poisson(
                self.send, indices, rate, self.opts.seed + len(self.doc["levels"]), self.stop
            )
        else:
            outcomes = arrivals.closed_loop(self.send, indices, concurrency, self.stop)
        deltas = self._deltas(before, outcomes)
        found = checks.level_checks(
            outcomes,
            self.opts.output_tokens,
            forces_length(self.api),
            deltas,
            self.opts.slo,
            concurrency if mode != "poisson" else None,
        )
        figures = level_metrics(outcomes, self.opts.slo)
        level = {
            "mode": mode,
            "concurrency": concurrency,
            "target_rate_rps": rate,
            "status": checks.worst(c["status"] for c in found),
            "requests": len(outcomes),
            "ok": sum(1 for o in outcomes if o.status == "ok"),
            "failed": sum(1 for o in outcomes if o.status != "ok"),
            "checks": found,
            "metrics": figures,
            "tokens": self._tokens(outcomes, deltas),
            "server_timings": server_side(outcomes, figures),
            "server_metrics_deltas": deltas or None,
            "errors": [
                {"request": o.index, "status": o.status, "detail": o.detail}
                for o in outcomes
                if o.status != "ok"
            ][:50],
        }
        if rate:
            level["achieved_rate_rps"] = _completion_rate(outcomes)
        self.doc["levels"].append(level)
        self.save()
        if outcomes and all(o.status == "unreachable" for o in outcomes):
            raise unreachable(self.target, outcomes[0].detail)
        return level

    def _deltas(self, before, outcomes) -> dict:
        if before is None:
            return {}
        deltas = server_info.deltas(before, server_info.scrape(self.target))
        counted = sum(o.stream.output_tokens or 0 for o in outcomes)
        if "output_tokens" in deltas and round(deltas["output_tokens"]) != counted:
            time.sleep(0.3)  # a server may update its counters a moment after the stream's end
            deltas = server_info.deltas(before, server_info.scrape(self.target))
        return deltas

    @staticmethod
    def _tokens(outcomes, deltas) -> dict:
        sources = {o.stream.count_source for o in outcomes if o.status in ("ok", "short")}
        source = "chunks" if None in sources or not sources else ",".join(sorted(sources))
        if source == "chunks" and "output_tokens" in deltas:
            source = "metrics"
        prompt = [o.stream.prompt_tokens for o in outcomes if o.stream.prompt_tokens is not None]
        return {
            "source": source,
            "output": sum(o.stream.tokens for o in outcomes),
            "prompt": sum(prompt) if prompt else None,
            "cached_prompt": sum(o.stream.cached_prompt_tokens or 0 for o in outcomes),
            "server_metrics_output_delta": deltas.get("output_tokens"),
        }

    # -- the arrivals -------------------------------------------------------------------------------
    def sweep(self) -> None:
        points = []
        for concurrency in self._plan():
            mode = "single" if concurrency == 1 else "concurrency"
            level = self.run_level(mode, concurrency)
            m = level["metrics"]
            points.append(
                {
                    "concurrency": concurrency,
                    "output_throughput_tps": m["output_throughput_tps"] if level["ok"] else None,
                    "request_throughput_rps": m["request_throughput_rps"],
                    "tpot_p50": (m["tpot_s"] or {}).get("p50"),
                    "ttft_p50": (m["ttft_s"] or {}).get("p50"),
                }
            )
            if self.opts.levels is None and arrivals.should_stop_sweep(points):
                break
        if len(points) > 1:
            self.doc["saturation"] = arrivals.saturation(points)
        self.save()

    def poisson(self) -> None:
        saturated = self.doc["saturation"] or {}
        rate = saturated.get("request_throughput_rps")
        if not rate:
            self.doc["warnings"].append("Poisson arrivals skipped: no saturation rate was measured")
            return
        for fraction in arrivals.FRACTIONS:
            level = self.run_level("poisson", 0, rate * fraction, self.opts.requests)
            level["fraction_of_saturation"] = fraction
            if arrivals.behind(level.get("achieved_rate_rps"), rate * fraction):
                level["stopped"] = "the achieved rate fell behind the offered rate"
                break
        self.save()

    # -- after ------------------------------------------------------------------------------------
    def judge_expectations(self) -> None:
        single = next((lv for lv in self.doc["levels"] if lv["concurrency"] == 1), None)
        tpot = ((single or {}).get("metrics") or {}).get("tpot_s") or {}
        single_tps = 1 / tpot["p50"] if tpot.get("p50") else None
        bandwidth, basis, flops, on_cpu = None, "", None, True
        if self.opts.gpu_class and self.opts.gpu_class != "cpu":
            from toolkit.catalog import load_catalog

            gpu = load_catalog().get(self.opts.gpu_class)
            bandwidth, flops, on_cpu = gpu.value("memory_bandwidth_bytes_per_second"), gpu.tensor_flops, False
            basis = f"{gpu.name} datasheet"
        elif self.info.weights_bytes and self.target.host in ("127.0.0.1", "localhost", "::1"):
            bandwidth, basis = (
                expectations.measured_copy_bandwidth(),
                "this run's measured CPU copy bandwidth",
            )
        prompt_tokens = (single or {}).get("tokens", {}).get("prompt")
        per_prompt = prompt_tokens / single["requests"] if prompt_tokens and single else None
        ttft = ((single or {}).get("metrics") or {}).get("ttft_s") or {}
        self.doc["expectations"] = {
            "decode": expectations.decode_roofline(
                self.info.weights_bytes, bandwidth, basis, single_tps, on_cpu
            ),
            "prefill": expectations.prefill_peak(self.info.n_params, flops, per_prompt, ttft.get("p50")),
        }

    def finish(self, complete: bool) -> int:
        statuses = [lv["status"] for lv in self.doc["levels"]]
        status = checks.worst(statuses) if statuses else "error"
        code = EXIT_CHECK_FAILED if status in ("fail", "error") else EXIT_OK
        self.doc.update(finished=utc_now(), complete=complete, status=status, exit_code=code)
        self.save()
        return code

    def save(self) -> None:
        if self.opts.json and self.opts.json != "-":
            from toolkit.atomic import write_text_atomic

            write_text_atomic(self.opts.json, json.dumps(self.doc, indent=2, default=str) + "\n")

    def execute(self) -> int:
        try:
            self.start()
            self.warm_up()
            self.sweep()
            if self.opts.poisson:
                self.poisson()
            self.judge_expectations()
        except KeyboardInterrupt:
            self.stop.set()
            self.doc["status"] = "interrupted"
            self.doc["finished"] = utc_now()
            self.save()
            raise
        except ToolkitError as err:
            self.doc["finished"] = utc_now()
            self.doc["status"] = "error"
            self.doc["exit_code"] = err.exit_code
            self.doc["error"] = {"ref": err.ref, "message": err.message}
            if self.doc["levels"] or err.exit_code != EXIT_USAGE:
                self.save()
            raise
        return self.finish(complete=True)


def _completion_rate(outcomes) -> float | None:
    """Poisson levels: the rate at which valid answers completed, first to last completion."""
    ends = sorted(o.end for o in outcomes if o.status == "ok")
    if len(ends) < 2 or ends[-1] <= ends[0]:
        return None
    return (len(ends) - 1) / (ends[-1] - ends[0])


def run_serving(args) -> int:
    """The `--serve` path of `toolkit bench`."""
    from toolkit.bench.serving.options import from_args
    from toolkit.bench.serving.report import print_result

    opts = from_args(args)
    run = ServingRun(opts, Target.parse(opts.url))
    try:
        code = run.execute()
    finally:
        print_result(run.doc, to_stdout_json=opts.json == "-")
    return code
