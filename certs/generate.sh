#!/usr/bin/env sh
# Create (or renew) the webhook's serving certificate for the self-signed overlay, then apply it:
#   certs/generate.sh            # writes manifests/overlays/self-signed/generated/
#   certs/generate.sh --days 90  # any `burstflow certs generate` option
# Needs `burstflow` on PATH (pip install .) or runs it from this checkout's .venv.
set -eu
cd "$(dirname "$0")/.."
if command -v burstflow >/dev/null 2>&1; then
    exec burstflow certs generate "$@"
fi
exec .venv/bin/python -m burstflow.cli certs generate "$@"
