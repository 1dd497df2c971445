"""Small readers of Redfish documents shared by the Redfish modules: links, numbers, names."""

from __future__ import annotations

from urllib.parse import urlsplit


def link_of(doc: dict, key: str | None = None) -> str | None:
    """The path of `doc[key]` (or of doc itself) without host and fragment: requests go only to the target."""
    ref = doc.get(key) if key else doc
    uri = ref.get("@odata.id") if isinstance(ref, dict) else None
    return path_of(uri) if isinstance(uri, str) and uri else None


def path_of(uri: str) -> str:
    parts = urlsplit(uri)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def number_of(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def name_of(doc: dict) -> str:
    return str(doc.get("Name") or doc.get("FanName") or doc.get("MemberId") or doc.get("Id") or "?")


def tail_of(doc: dict) -> str:
    """The member's own short id: MemberId, Id, or the last segment of its @odata.id."""
    for key in ("MemberId", "Id"):
        if doc.get(key) not in (None, ""):
            return str(doc[key])
    uri = doc.get("@odata.id")
    return uri.rstrip("/").rsplit("/", 1)[-1] if isinstance(uri, str) and uri else "?"
