"""Kubernetes API fixtures (filled in by the gateway work)."""
