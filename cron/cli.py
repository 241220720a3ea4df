"""`burstflow cron ...` subcommands: `preview` (no cluster) and `run` (the service, see cron/app.py)."""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone

import yaml

from burstflow.timefmt import parse_time

from burstflow.cron.app import add_run_arguments, run_command
from burstflow.cron.preview import PreviewError, preview, render_table


def register(commands) -> None:
    """Add `cron preview` and `cron run` to the top-level parser."""
    cron = commands.add_parser("cron", help="the CronWorkflow service and its tools")
    sub = cron.add_subparsers(dest="cron_command", required=True, metavar="COMMAND")

    preview = sub.add_parser("preview", help="print the next run times of a CronWorkflow file (no cluster needed)")
    preview.add_argument("file", help="a CronWorkflow YAML or JSON file ('-' for stdin)")
    preview.add_argument("--from", dest="start", metavar="T", type=_parse_start,
                         help="start after this RFC 3339 time (default: now)")
    preview.add_argument("--count", "-n", type=_positive, default=10, help="how many run times (default 10)")
    preview.add_argument("-o", "--output", choices=("table", "json"), default="table")
    preview.set_defaults(func=preview_command)

    run = sub.add_parser("run", help="run the cron service (leader election, metrics on :9090)",
                         description="Every flag overrides its BURSTFLOW_CRON_* variable.")
    add_run_arguments(run)
    run.set_defaults(func=run_command)


def _parse_start(text: str) -> datetime:
    value = parse_time(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {text!r} (e.g. 2026-03-08T00:00:00Z)")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def preview_command(args: argparse.Namespace) -> int:
    """Exit 0 with the rows; 1 with every field-path error for an invalid file; 2 for an unreadable file."""
    try:
        text = sys.stdin.read() if args.file == "-" else open(args.file, encoding="utf-8").read()
        obj = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as error:
        print(f"burstflow cron preview: cannot read {args.file}: {error}", file=sys.stderr)
        return 2
    start = args.start or datetime.now(timezone.utc)
    try:
        rows, warnings = preview(obj if isinstance(obj, dict) else {}, start=start, count=args.count)
    except PreviewError as error:
        for message in error.errors:
            print(f"{args.file}: {message}", file=sys.stderr)
        return 1
    for warning in warnings:
        print(f"{args.file}: warning: {warning}", file=sys.stderr)
    if args.output == "json":
        print(json.dumps([row.to_dict() for row in rows], indent=2))
    else:
        print(render_table(rows))
    return 0
