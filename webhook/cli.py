"""`burstflow` subcommands of the webhook service."""
from __future__ import annotations


def register(commands) -> None:
    """Add this service's subcommands to the top-level parser."""
