"""The `burstflow` command: one argparse tree; each service registers its own subcommands.

The composition root (docs/development/architecture.md): it may import both services; nothing below imports it."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from burstflow import data
from burstflow.certs import register as register_certs
from burstflow.cron.cli import register as register_cron
from burstflow.webhook.cli import register as register_webhook


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="burstflow",
        description="Argo Workflows on serverless containers: admission webhook, resource pools and cron service.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register_webhook(commands)
    register_cron(commands)
    register_certs(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: every subcommand sets `func(args) -> int` (the exit code)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        data.require()
        return int(args.func(args) or 0)
    except data.MissingDataFile as exc:  # a broken install: one line naming the file, not a traceback
        print(f"burstflow: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `burstflow mutate ... | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
