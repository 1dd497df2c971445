"""Every event log of a Redfish service's Systems and Managers, read and named.

Vendors keep hardware events in logs of their own: HPE the IML (Systems) and the iLO Event Log
(Managers), Cray and Gigabyte/AMI an `EventLog` beside the IPMI `SEL`, Intel a `SEL` and a
`RedfishLog`, OpenBMC an `EventLog`. All are read; logs that record something else — logins (audit,
security), the BMC's own journal, the host console, dumps — are listed as not read, with why, so the
report says which logs it judged.

An entry's severity comes from the log's own fields: `Severity` (LogEntry up to v1.14), else
`MessageSeverity`; an entry the vendor marks repaired (HPE `Oem.Hpe.Repaired`) or an IPMI event's
deassertion (`EntryCode: Deassert`) is OK. An entry without such a field has no severity: it is listed
and never alarms, whatever its words say ("Non-critical", "Upper Critical going low").
"""

from __future__ import annotations

import datetime as dt
import re

from toolkit.health.bmc.model import SelEntry
from toolkit.health.bmc.redfish_links import link_of, path_of, tail_of
from toolkit.health.bmc.redfish_sensors import Walker
from toolkit.health.model import Status

SEVERITY = {"OK": Status.OK, "Warning": Status.WARNING, "Critical": Status.CRITICAL}
# logs that are not hardware event logs: (pattern on Id/Name/Description, why)
NOT_EVENTS = [
    (re.compile(r"audit", re.I), "audit log (user actions)"),
    (re.compile(r"secur", re.I), "security log (logins)"),
    (re.compile(r"journal", re.I), "the BMC's own journal"),
    (re.compile(r"host ?logger|console", re.I), "host console output"),
    (re.compile(r"dump|crash|debug|post ?code", re.I), "diagnostic data"),
]
MAX_PAGES = 64  # pages of one log followed at most (bmcweb serves 1000 entries a page)
MAX_ENTRIES = 5000  # entries kept of one log
MAX_FETCHED = 64  # entries fetched one by one where a collection lists links only


def read_logs(client: Walker, owners: list[dict]) -> tuple[list[SelEntry] | None, list[dict]]:
    """(entries of every event log, oldest first; None when there is no event log at all) and, per log
    service found, what was done with it: {"log", "path", "read", "entries" or "why"}."""
    entries: list[SelEntry] = []
    logs: list[dict] = []
    for owner in owners:
        for service in client.members(link_of(owner, "LogServices")):
            name = str(service.get("Id") or service.get("Name") or tail_of(service))
            record = {"log": name, "path": link_of(service), "read": False}
            logs.append(record)
            why = _not_events(service)
            if why is None and link_of(service, "Entries") is None:
                why = "no entries link"
            if why is not None:
                record["why"] = why
                continue
            found, complete = _entries(client, link_of(service, "Entries"), name)
            record |= {"read": True, "entries": len(found)}
            if not complete:
                record["partial"] = "not every page or entry was read within the time limit"
            entries += found
    if not any(r["read"] for r in logs):
        return None, logs
    entries.sort(key=_order)
    return entries, logs


def bmc_clock(managers: list[dict]) -> dt.datetime | None:
    """The BMC's own clock (Manager.DateTime), to judge how recent an event is."""
    for manager in managers:
        when = _time(manager.get("DateTime"))
        if when is not None:
            return when
    return None


def _not_events(service: dict) -> str | None:
    if service.get("DiagnosticDataType"):
        return "diagnostic data"
    words = " ".join(str(service.get(k) or "") for k in ("Id", "Name", "Description"))
    return next((why for pattern, why in NOT_EVENTS if pattern.search(words)), None)


def _entries(client: Walker, path: str | None, log: str) -> tuple[list[SelEntry], bool]:
    """The log's entries, following Members@odata.nextLink while the deadline allows."""
    members: list[dict] = []
    complete, pages = True, 0
    while path and pages < MAX_PAGES and len(members) < MAX_ENTRIES:
        page = client.get(path) or {}
        members += [m for m in page.get("Members") or [] if isinstance(m, dict)]
        pages += 1
        following = page.get("Members@odata.nextLink")
        path = path_of(following) if isinstance(following, str) and following else None
        if path and not client.spare():
            complete = False
            break
    complete &= path is None
    found = []
    for n, member in enumerate(members[:MAX_ENTRIES]):
        if not _is_entry(member):  # a collection that lists links only
            fetched = client.get(link_of(member)) if n < MAX_FETCHED and client.spare() else None
            if not fetched:
                complete = False
                continue
            member = fetched
        found.append(_entry(member, log))
    return found, complete and len(members) <= MAX_ENTRIES


def _is_entry(member: dict) -> bool:
    return any(k in member for k in ("Message", "MessageId", "Created", "EntryType"))


def _entry(entry: dict, log: str) -> SelEntry:
    message = str(entry.get("Message") or entry.get("MessageId") or "")
    created = entry.get("Created") or entry.get("EventTimestamp")
    return SelEntry(created, message, _severity(entry), log=log, when=_time(created))


def _severity(entry: dict) -> Status | None:
    """The entry's verdict from its own fields, None where it has none."""
    level = SEVERITY.get(entry.get("Severity"))
    if level is None:
        level = SEVERITY.get(entry.get("MessageSeverity"))
    if level is None:
        return None
    if str(entry.get("EntryCode") or "").lower().startswith("deassert"):
        return Status.OK  # the condition went away
    repaired = any(
        isinstance(o, dict) and o.get("Repaired") is True for o in (entry.get("Oem") or {}).values()
    )
    return Status.OK if repaired else level


def _time(stamp) -> dt.datetime | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        when = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when  # naive where the BMC stamps local time without a zone: sel_check reads it so


def _order(entry: SelEntry) -> dt.datetime:
    when = entry.when or dt.datetime.min
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)
