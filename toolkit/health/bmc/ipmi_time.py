"""Times as ipmitool prints them, in every form it has printed them.

ipmitool up to 1.8.18 prints SEL times as `06/14/2023 | 10:01:17`. From 1.8.19 (Debian 12's package) it
uses the C library's locale forms `%x` and `%X %Z`: `12/03/26 | 13:53:23 UTC` in the C locale,
`12/14/22 | 23:09:44 CET` on a host in Paris, `05/27/2022 | 06:12:15 PM CST` or
`Mon 21 Dec 2020 | 12:40:49 PM PST` under other locales. Entries logged before the BMC's clock was set
read `Pre-Init | 0000000204` or `S+ 00:01:02`; they have no usable time. `ipmitool sel time get` prints
the BMC's clock the same way (`12/03/26 13:53:23 UTC`), so an entry and the clock are read alike.
"""

from __future__ import annotations

import datetime as dt
import re

_DATES = ("%m/%d/%Y", "%m/%d/%y", "%a %d %b %Y", "%d %b %Y", "%Y-%m-%d", "%d.%m.%Y", "%d.%m.%y")
_TIMES = ("%H:%M:%S", "%I:%M:%S %p", "%H:%M")
# Zone abbreviations with one meaning; the ambiguous ones (CST, IST, BST...) are left naive.
_ZONES = {
    "UTC": 0, "GMT": 0, "Z": 0, "WET": 0, "WEST": 1, "CET": 1, "CEST": 2, "MET": 1, "MEST": 2,
    "EET": 2, "EEST": 3, "MSK": 3, "EST": -5, "EDT": -4, "CDT": -5, "MST": -7, "MDT": -6,
    "PST": -8, "PDT": -7, "AKST": -9, "AKDT": -8, "HST": -10, "JST": 9, "KST": 9, "HKT": 8,
    "SGT": 8, "AEST": 10, "AEDT": 11, "NZST": 12, "NZDT": 13,
}  # fmt: skip
_OFFSET = re.compile(r"^([+-])(\d{2}):?(\d{2})$")


def _zone(token: str) -> dt.tzinfo | bool | None:
    """A tzinfo for a zone token, None for a zone word we cannot place (taken as local), False for
    a token that is no zone at all."""
    if token.upper() in _ZONES:
        return dt.timezone(dt.timedelta(hours=_ZONES[token.upper()]), token.upper())
    m = _OFFSET.match(token)
    if m:
        minutes = int(m[2]) * 60 + int(m[3])
        return dt.timezone(dt.timedelta(minutes=-minutes if m[1] == "-" else minutes))
    if re.fullmatch(r"[A-Za-z]{2,5}", token) and token.upper() not in ("AM", "PM"):
        return None
    return False


def parse_sel_time(date: str, time: str) -> dt.datetime | None:
    """The moment an SEL entry's date and time columns name: timezone-aware when the zone is known,
    naive (the BMC's or the host's local time) when not; None for Pre-Init, `S+` (seconds since the
    BMC started) and anything unreadable."""
    date, time = " ".join(date.split()), " ".join(time.split())
    if not date or not time or date.startswith(("S+", "Pre-Init")) or date in ("Unspecified", "Unknown"):
        return None
    words = time.split(" ")
    tz: dt.tzinfo | None = None
    if len(words) > 1:
        zone = _zone(words[-1])
        if zone is not False:
            tz, words = zone, words[:-1]
    clock = " ".join(words)
    for dfmt in _DATES:
        for tfmt in _TIMES:
            try:
                when = dt.datetime.strptime(f"{date} {clock}", f"{dfmt} {tfmt}")
            except ValueError:
                continue
            return when.replace(tzinfo=tz) if tz is not None else when
    return None


def parse_clock(text: str) -> dt.datetime | None:
    """`ipmitool sel time get`: `12/03/26 13:53:23 UTC`, `06/14/2023 10:01:17`,
    `Mon 21 Dec 2020 12:40:49 PM PST`; None for an unset clock (`S+ 06:21:29`) or anything else."""
    line = " ".join((text.strip().splitlines() or [""])[-1].split())
    words = line.split(" ")
    for n in (4, 3, 1):  # "Mon 21 Dec 2020" is four words, "21 Dec 2020" three, "12/03/26" one
        if len(words) > n:
            when = parse_sel_time(" ".join(words[:n]), " ".join(words[n:]))
            if when is not None:
                return when
    return None
