"""Burstflow: Argo Workflows on serverless containers.

The one installed package. Its top-level modules are the base both services share (clock, CEL, the Kubernetes
gateway, leader election, time format, logging, settings, selectors, CRD schemas, certificates); `webhook` and
`cron` are the two services, `apisim` the local Kubernetes API endpoint, and `cli` / `demo` the composition root
above them all (docs/development/architecture.md, enforced by tests/test_architecture.py).
"""
