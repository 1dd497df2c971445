"""One module per reference load, each with `run(ctx, rec)`. Heavy imports stay inside `run`."""

# Run order. On the CPU the micro checks come first: they measure the peaks
# that the other loads' expectations are derived from.
WORKLOADS = ("matmul", "memory_bandwidth", "kto_lora", "inference")
PEAK_WORKLOADS = ("matmul", "memory_bandwidth")
