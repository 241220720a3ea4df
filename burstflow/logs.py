"""Logging for both services: one JSON schema and one text layout, with context fields passed as `extra=fields(...)`.

A JSON line is `{"time", "level", "logger", "message", <context fields>..., "exception"?}`. The context fields have
the same names in both services where they apply: `uid` (the admission request's uid), `namespace`, `name`, `kind`;
any other keyword is allowed:

    log.info("created %s", workflow, extra=fields(namespace=ns, name=name, kind="CronWorkflow"))
"""
from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TextIO

import orjson

from burstflow.settings import Settings, SettingsError, setting
from burstflow.timefmt import format_time

LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("debug", "info", "warning", "error")
# The LogRecord attribute that carries the context fields (a name no LogRecord attribute already has).
CONTEXT_ATTRIBUTE = "burstflow_context"
# Keys the JSON schema fixes; a context field of the same name is written as `field_<name>` instead of replacing it.
RESERVED = ("time", "level", "logger", "message", "exception")


@dataclass(frozen=True)
class LogSettings(Settings):
    """The logging settings both services declare the same way (each service's settings dataclass derives from
    this one): `--log-format` / `BURSTFLOW_<SERVICE>_LOG_FORMAT` and `--log-level` / `BURSTFLOW_<SERVICE>_LOG_LEVEL`."""

    log_format: str = setting("json", choices=LOG_FORMATS, reason=(
        "json for log pipelines (the one schema of both services); text for a terminal"), help="log line format")
    log_level: str = setting("info", choices=LOG_LEVELS, reason=(
        "info logs start-up, reloads, malformed requests and every run created or skipped; debug adds one line per "
        "admission"), help="lowest level logged")

    def validate(self) -> None:
        """Raise `SettingsError` naming the flag and the variable of a format or level that does not exist."""
        super().validate()
        if self.log_format not in LOG_FORMATS:
            raise SettingsError(f"{self.source('log_format')}: {self.log_format!r} is not one of "
                                f"{', '.join(LOG_FORMATS)}")
        if self.log_level.lower() not in LOG_LEVELS:
            raise SettingsError(f"{self.source('log_level')}: {self.log_level!r} is not one of "
                                f"{', '.join(LOG_LEVELS)}")


def fields(**values: Any) -> dict[str, Any]:
    """The `extra=` mapping that attaches `values` to a log record as context fields (in this order)."""
    return {CONTEXT_ATTRIBUTE: values}


def context(record: logging.LogRecord) -> dict[str, Any]:
    """The context fields of `record` (empty when it was logged without `extra=fields(...)`)."""
    return getattr(record, CONTEXT_ATTRIBUTE, None) or {}


# (whole second, its "YYYY-MM-DDTHH:MM:SS" text): lines of the same second share the formatting, done once per
# second by `format_time` (one tuple, replaced whole, so a thread reading it never sees half of an update).
_second: tuple[int, str] = (-1, "")
# What orjson hands to `default` instead of serialising itself, so a line reads as the standard encoder would write
# it with `default=str`: datetimes and dataclasses as their str().
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _timestamp(record: logging.LogRecord) -> str:
    """`record.created` as UTC RFC 3339 with milliseconds (truncated) and a Z."""
    global _second
    second = int(record.created)
    cached, text = _second
    if cached != second:
        text = format_time(datetime.fromtimestamp(second, timezone.utc), timespec="seconds")[:-1]  # without the Z
        _second = (second, text)
    return f"{text}.{int((record.created - second) * 1000):03d}Z"


def _json_line(entry: dict[str, Any]) -> str:
    """`entry` as one line of JSON, values JSON cannot hold as their str(). orjson writes it (a tenth of the
    standard encoder's time: a burst logs a line per run created); what orjson refuses (integers beyond 64 bits,
    non-string keys) goes through the standard encoder."""
    try:
        return orjson.dumps(entry, default=str, option=_ORJSON_OPTIONS).decode()
    except TypeError:
        return json.dumps(entry, default=str)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `time` (UTC RFC 3339 with milliseconds and `Z`), `level` (lower case), `logger`,
    `message`, then the record's context fields, then `exception` when the record carries exc_info.
    Values JSON cannot hold are written as their `str()`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in context(record).items():
            entry[f"field_{key}" if key in RESERVED else key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return _json_line(entry)


class TextFormatter(logging.Formatter):
    """`time level logger: message key=value ...` for a person at a terminal, with the traceback on the next lines."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname.lower():<7} {record.name}: {record.getMessage()}"
        extra = " ".join(f"{key}={value}" for key, value in context(record).items())
        if extra:
            line = f"{line} {extra}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def configure_logging(log_format: str, level: str, stream: TextIO | None = None) -> None:
    """Root logging for a service process: one handler on stderr (or `stream`) writing `json` or `text` lines at
    `level` (any case). aiohttp's per-request access log is kept at WARNING: the services log what they decide."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # Neither format writes the caller's file and line, thread or process, so the records need not look them up
    # (the Logging HOWTO's "Optimization" section): a third of each line's cost, which a burst of 10,000 runs
    # created, each logged, pays 10,000 times.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
