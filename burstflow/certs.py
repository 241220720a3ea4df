"""`burstflow certs`: a CA and serving certificate for the webhook Service (filled in by the deployment work)."""
from __future__ import annotations


def register(commands) -> None:
    """Add the `certs` subcommands."""
