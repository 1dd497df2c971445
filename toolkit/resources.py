"""The data files shipped inside the package (`toolkit/data/`), read the same way by every part."""

from __future__ import annotations

from importlib import resources


def data_text(name: str) -> str:
    """The text of `toolkit/data/<name>`."""
    return resources.files("toolkit").joinpath(f"data/{name}").read_text(encoding="utf-8")


def data_texts(folder: str, suffix: str) -> list[tuple[str, str]]:
    """(file name, text) of the files shipped in `toolkit/data/<folder>` ending in `suffix`, by name."""
    entries = resources.files("toolkit").joinpath(f"data/{folder}").iterdir()
    return [
        (e.name, e.read_text(encoding="utf-8"))
        for e in sorted(entries, key=lambda e: e.name)
        if e.name.endswith(suffix)
    ]
