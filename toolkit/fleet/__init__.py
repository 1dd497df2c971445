"""Fleet runs: `toolkit bench` and `toolkit health` on every host an inventory selects, over SSH, in
parallel, gathered into one result (`-i INVENTORY --limit PATTERN`)."""
