import contextlib
import os
import sys

from toolkit.cli import main

code = main()
if code == 130:
    # An interrupt that passed through an `exec` of source text (dataclasses build their methods that way
    # while a module imports) leaves CPython's "unhandled KeyboardInterrupt" mark set although toolkit
    # handled it, and `python -m` then ends the process by SIGINT instead of exit 130. Leave directly.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
raise SystemExit(code)
