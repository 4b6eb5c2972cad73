"""Chart parts the pages share."""

from __future__ import annotations

import altair as alt

MINUTES = "%H:%M:%S"
HOURS = "%d %b %H:%M"


def utc_time(field: str, title: str, fmt: str = HOURS) -> alt.X:
    """A time axis in UTC on a 24-hour clock, as the API's timestamps and the captions are
    (Vega's default is the browser's zone on a 12-hour clock without AM / PM)."""
    return alt.X(f"{field}:T", title=f"{title} (UTC)", scale=alt.Scale(type="utc"), axis=alt.Axis(format=fmt))


def utc_tooltip(field: str, title: str, fmt: str = HOURS) -> alt.Tooltip:
    """The same time in a tooltip: a tooltip has no scale, so UTC comes from the field's time unit
    (a UTC unit is read and formatted in UTC), to the second."""
    return alt.Tooltip(f"{field}:T", timeUnit="utcyearmonthdatehoursminutesseconds", title=f"{title} (UTC)", format=fmt)
