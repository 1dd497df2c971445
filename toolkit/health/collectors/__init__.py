"""Collectors for `toolkit health`: each reads one source (GPUs, BMC, Docker, the system) into checks."""
