"""Wires the resource pools into one webhook process: ledger and placer on the admission path, the reconciler
under Lease leader election, all sharing one gateway connection, clock and metrics registry."""
from __future__ import annotations

from dataclasses import replace

from prometheus_client import CollectorRegistry

from burstflow import kube as k
from burstflow.clock import Clock
from burstflow.webhook.pools.ledger import BlockSettings, Ledger
from burstflow.webhook.pools.metrics import PoolMetrics
from burstflow.webhook.pools.placer import DEFAULT_DECISION_TIMEOUT, PoolPlacer
from burstflow.webhook.pools.reconciler import (DEFAULT_INTERVAL, DEFAULT_RESERVATION_TIMEOUT, PoolReconciler,
                                      ReconcilerLeadership)


class PoolStack:
    """`placer` goes to `PodAdmitter(placer=...)`; `start()` joins the reconciler election (every replica admits,
    one reconciles); `stop()` leaves it (releasing the Lease) and cancels pending ledger writes."""

    def __init__(self, *, kube: k.Kube, clock: Clock, registry: CollectorRegistry, identity: str,
                 lease_namespace: str, namespace: str | None = None,
                 decision_timeout: float = DEFAULT_DECISION_TIMEOUT,
                 reservation_timeout: float = DEFAULT_RESERVATION_TIMEOUT,
                 reconcile_interval: float = DEFAULT_INTERVAL, blocks: BlockSettings | None = BlockSettings(),
                 **election: float) -> None:
        self.metrics = PoolMetrics(registry)
        if blocks is not None:
            # A spare slot handed out late must still have its pod seen before its reservation expires.
            blocks = replace(blocks, handout=min(blocks.handout, reservation_timeout / 6))
        self.ledger = Ledger(kube=kube, clock=clock, metrics=self.metrics, blocks=blocks)
        self.placer = PoolPlacer(ledger=self.ledger, metrics=self.metrics, decision_timeout=decision_timeout)
        self.reconciler = PoolReconciler(kube=kube, clock=clock, metrics=self.metrics, namespace=namespace,
                                         reservation_timeout=reservation_timeout, interval=reconcile_interval)
        self.leadership = ReconcilerLeadership(reconciler=self.reconciler, kube=kube, clock=clock,
                                               identity=identity, namespace=lease_namespace, metrics=self.metrics,
                                               **election)

    @property
    def is_leader(self) -> bool:
        return self.leadership.elector.is_leader

    def start(self) -> None:
        self.leadership.start()

    async def stop(self, *, release: bool = True) -> None:
        await self.leadership.stop(release=release)
        await self.ledger.close()
