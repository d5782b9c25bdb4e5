"""Cron expressions for KFP recurring runs.

The KFP backend reads a cron with SIX fields, seconds first (robfig/cron v1: `sec min hour dom month dow`,
day-of-week optional). A 5-field Unix cron passes its validation and is misread: `0 3 * * *` becomes
"second 0 of minute 3 of every hour", an hourly run. So a 5-field cron is converted here (seconds 0 prepended)
and every field is checked against the ranges the backend accepts; anything else is rejected with a message
that says what is expected. When both day-of-month and day-of-week are restricted, the backend runs on either
(as Unix cron does), so the conversion keeps the meaning.
"""

from __future__ import annotations

import re

from cong.errors import CongError

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# name, lowest, highest, names (numbered from `lowest`)
SECOND = ("second", 0, 59, ())
FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, MONTHS),
    ("day of week", 0, 6, DAYS),
)
MACROS = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}
EXPECTED = (
    "expected a 5-field Unix cron `minute hour day-of-month month day-of-week` (e.g. `0 3 * * *`: daily at "
    "03:00), the backend's 6-field form with seconds first (`0 0 3 * * *`), or one of " + ", ".join(MACROS)
)
ITEM = re.compile(r"^(?P<range>\*|\?|(?P<low>\w+)(-(?P<high>\w+))?)(/(?P<step>\d+))?$")


def to_kfp_cron(expression: str) -> str:
    """The 6-field, seconds-first cron the KFP backend reads for `expression` (5 or 6 fields, or a macro)."""
    text = " ".join(expression.split())
    if text.startswith("@"):
        if text.lower() not in MACROS:
            raise CongError(f"cron {expression!r}: unknown macro; {EXPECTED}.")
        return MACROS[text.lower()]
    fields = text.split(" ") if text else []
    if len(fields) == 5:
        fields = ["0", *fields]
    elif len(fields) != 6:
        raise CongError(f"cron {expression!r} has {len(fields)} fields; {EXPECTED}.")
    for value, spec in zip(fields, (SECOND, *FIELDS), strict=True):
        _check_field(expression, value, spec)
    return " ".join(fields)


def _check_field(expression: str, value: str, spec: tuple) -> None:
    name, low, high, names = spec
    for item in value.split(","):
        match = ITEM.match(item)
        if match is None:
            raise CongError(
                f"cron {expression!r}: the {name} field {value!r} is not a list of values, ranges `a-b` or steps "
                f"`*/n` / `a-b/n`; {EXPECTED}."
            )
        if match["range"] == "?" and name not in ("day of month", "day of week"):
            raise CongError(f"cron {expression!r}: `?` is allowed only in the day fields, not in the {name} field.")
        step = match["step"]
        if step is not None and not 1 <= int(step) <= high:
            raise CongError(f"cron {expression!r}: step /{step} in the {name} field must be 1 to {high}.")
        if match["low"] is None:
            continue
        if step is not None and match["high"] is None:
            # robfig/cron reads `a/n` as `a-<max>/n`; Unix crons differ, so ask for the range.
            raise CongError(
                f"cron {expression!r}: write the {name} field {item!r} as a range with a step, e.g. "
                f"`{match['low']}-{high}/{step}`."
            )
        first = _number(expression, match["low"], spec)
        last = _number(expression, match["high"], spec) if match["high"] else first
        if first > last:
            raise CongError(f"cron {expression!r}: the range {item!r} in the {name} field runs backwards.")


def _number(expression: str, token: str, spec: tuple) -> int:
    name, low, high, names = spec
    if token.upper() in names:
        return low + names.index(token.upper())
    if not token.isdigit():
        allowed = f"{low} to {high}" + (f" or {names[0]}..{names[-1]}" if names else "")
        raise CongError(f"cron {expression!r}: {token!r} is not a valid {name} ({allowed}).")
    number = int(token)
    if name == "day of week" and number == 7:
        raise CongError(f"cron {expression!r}: day of week 7 is not accepted by the backend; write 0 (or SUN).")
    if not low <= number <= high:
        raise CongError(f"cron {expression!r}: {name} {number} is out of range ({low} to {high}).")
    return number
