"""The parts of the GPU acceptance run (`benchmarks/gpu_acceptance.py`); docs/GPU_ACCEPTANCE.md."""
