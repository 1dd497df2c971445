"""What runs inside LLaMA-Factory's own environment for `toolkit bench --engine llamafactory`.

`run.py` is started with that environment's Python (never imported by toolkit, whose environment holds
other transformers/TRL/PEFT versions): it runs LLaMA-Factory's own entry point with toolkit's step timer
as a callback. `toolkit.bench.engine_llamafactory` prepares its input and reads what it wrote.
"""
