"""Secrets known to this run (BMC passwords, API keys) and their removal from any text we print.

Every report string passes through `redact()` before it is printed or written, so a password that
slips into an exception message from a library still never reaches output, logs or JSON.
"""

from __future__ import annotations

_SECRETS: set[str] = set()


def register(secret: str | None) -> None:
    if secret and len(secret) >= 3:  # shorter strings would mangle ordinary words
        _SECRETS.add(secret)


def redact(text):
    if not isinstance(text, str) or not _SECRETS:
        return text
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def redact_tree(value):
    """Redact every string inside dicts/lists (a report's JSON document)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(k): redact_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_tree(v) for v in value]
    return value
