"""The cron service's one app factory and main: settings, logging, metrics, Kubernetes client, runner, serve."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping

from prometheus_client import CollectorRegistry

from burstflow.clock import Clock, SystemClock
from burstflow.kube import ConfigError, Kube
from burstflow.logs import configure_logging, fields
from burstflow.settings import SettingsError

from burstflow.cron.leader import elector_from_settings
from burstflow.cron.metrics import CronMetrics, metrics_app, start_metrics_server
from burstflow.cron.runner import CronRunner
from burstflow.cron.settings import CronSettings

log = logging.getLogger("burstflow.cron")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `burstflow cron run`: one per setting, each overriding its `BURSTFLOW_CRON_*` variable."""
    CronSettings.add_arguments(parser)


def kubeconfig_path(explicit: str | None, env: Mapping[str, str]) -> str | None:
    """The kubeconfig to use: `explicit` (flag or BURSTFLOW_CRON_KUBECONFIG), else the first file of $KUBECONFIG,
    else None in a pod (the in-cluster service account), else ~/.kube/config when it exists."""
    if explicit:
        return explicit
    if env.get("KUBECONFIG"):
        return env["KUBECONFIG"].split(os.pathsep)[0]
    if env.get("KUBERNETES_SERVICE_HOST"):
        return None
    default = os.path.expanduser("~/.kube/config")
    return default if os.path.exists(default) else None


def run_command(args: argparse.Namespace) -> int:
    """`burstflow cron run`: serve until SIGTERM/SIGINT. Exit code 2 for bad settings or connection config."""
    try:
        settings = CronSettings.from_args(args, os.environ)
    except SettingsError as error:
        print(f"burstflow cron run: {error}", file=sys.stderr)
        return 2
    settings = settings.with_overrides(kubeconfig=kubeconfig_path(settings.kubeconfig, os.environ))
    configure_logging(settings.log_format, settings.log_level)
    try:
        return asyncio.run(serve(settings))
    except KeyboardInterrupt:
        return 130


async def serve(settings: CronSettings, *, clock: Clock | None = None, kube: Kube | None = None,
                registry: CollectorRegistry | None = None, stop: asyncio.Event | None = None,
                on_ready: Callable[[int], Awaitable[None] | None] | None = None) -> int:
    """Run the cron service until `stop` is set (or SIGTERM/SIGINT when serving for real). Returns an exit code.

    Opens the Kubernetes connection unless `kube` is given, serves /metrics and /healthz on the settings' port
    (`on_ready(bound_port)` is called once listening), campaigns for the Lease when `leader_election` is on.
    """
    clock = clock or SystemClock()
    log.info("starting", extra=fields(settings=settings.redacted()))
    own_kube = kube is None
    if kube is None:
        try:
            kube = await Kube.connect(settings.kubeconfig, clock=clock)
        except ConfigError as error:
            log.error("cannot connect to Kubernetes", extra=fields(error=str(error)))
            return 2
    registry = registry or CollectorRegistry()
    runner = CronRunner(kube=kube, clock=clock, settings=settings, metrics=CronMetrics(registry),
                        elector=elector_from_settings(kube, settings, clock=clock))
    web_runner, port = await start_metrics_server(
        metrics_app(registry, healthy=runner.healthy), host=settings.metrics_host, port=settings.metrics_port)
    log.info("metrics listening", extra=fields(port=port))
    if on_ready is not None:
        maybe = on_ready(port)
        if asyncio.iscoroutine(maybe):
            await maybe
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread, or a platform without signal handlers: `stop` alone ends the service
    task = loop.create_task(runner.run(), name="cron-runner")
    stopper = loop.create_task(stop.wait())
    try:
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
        if task.done() and task.exception() is not None:
            log.error("runner failed", exc_info=task.exception())
            return 1
        return 0
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
        for pending in (task, stopper):
            pending.cancel()
        await asyncio.gather(task, stopper, return_exceptions=True)
        await web_runner.cleanup()
        if own_kube:
            await kube.close()
        log.info("stopped")
