"""One module per reference load, each with `run(ctx, rec)`. Heavy imports stay inside `run`."""

# Run order. On the CPU the micro checks come first: they measure the peaks
# that the other loads' expectations are derived from.
WORKLOADS = ("matmul", "memory_bandwidth", "kto_lora", "inference", "vectors")
PEAK_WORKLOADS = ("matmul", "memory_bandwidth")
# Loads whose expectations do not derive from the measured peaks: run alone, they run without them.
PEAK_FREE_WORKLOADS = ("vectors", "allreduce")
# Loads that need several processes (`--gpus N`): in the default list only there; asked for in a
# single-process run they are skipped with the reason.
DISTRIBUTED_WORKLOADS = ("allreduce",)
