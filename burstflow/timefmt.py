"""RFC 3339 timestamps as Kubernetes writes them (`metav1.Time`), shared by the webhook's pools and the cron service."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


def parse_time(value: Any) -> datetime | None:
    """RFC 3339 (`2026-03-08T07:30:00Z`, offsets, fractions) to an aware UTC datetime; None for empty/invalid."""
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(timezone.utc) if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def format_time(value: datetime, *, timespec: str | None = None) -> str:
    """RFC 3339 in UTC with a `Z`. By default Kubernetes' metav1.Time form (fractions kept only when present);
    `timespec` fixes the precision ("seconds", "milliseconds", "microseconds"), truncating, never rounding."""
    utc = value.astimezone(timezone.utc)
    if timespec is None:
        timespec = "microseconds" if utc.microsecond else "seconds"
    return utc.replace(tzinfo=None).isoformat(timespec=timespec) + "Z"
