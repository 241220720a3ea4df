"""Fault and latency injection: rules matched on method and path that answer with a proper Status or wait first."""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from .status import ApiError, conflict

_MESSAGES = {
    429: "Too many requests, please try again later.",
    500: "Internal error occurred: injected fault",
    503: "the server is currently unable to handle the request",
    504: "Timeout: request did not complete within the allotted timeout",
}


@dataclass
class Fault:
    method: str | None
    path: re.Pattern[str]
    status: int
    times: int | None
    probability: float | None
    rng: random.Random
    message: str | None
    fired: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and bool(self.path.search(path))

    def fires(self) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        if self.probability is not None and self.rng.random() >= self.probability:
            return False
        self.fired += 1
        return True


@dataclass
class Latency:
    method: str | None
    path: re.Pattern[str]
    seconds: float


@dataclass
class Target:
    """What a faulted request was about, so a 409 can name the object as a real conflict would."""
    plural: str = ""
    group: str = ""
    name: str = ""


@dataclass
class Faults:
    """`sim.faults`: rules checked in the order added; the first that fires answers the request."""

    rules: list[Fault] = field(default_factory=list)
    latencies: list[Latency] = field(default_factory=list)

    def add(self, *, method: str | None = None, path: str = "", status: int, times: int | None = None,
            probability: float | None = None, seed: int | None = None, message: str | None = None) -> Fault:
        """Answer matching requests with `status`: the first `times` of them, or each with `probability`
        (drawn from a generator seeded with `seed`); neither means every matching request."""
        if status not in (409, *_MESSAGES):
            raise ValueError(f"cannot inject status {status}: choose 409, 429, 500, 503 or 504")
        if probability is not None and not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be within [0, 1], got {probability}")
        fault = Fault(method.upper() if method else None, re.compile(path), status, times, probability,
                      random.Random(seed), message)
        self.rules.append(fault)
        return fault

    def add_latency(self, seconds: float, *, method: str | None = None, path: str = "") -> Latency:
        """Delay every matching request by `seconds` (on the sim's clock) before it is handled."""
        rule = Latency(method.upper() if method else None, re.compile(path), seconds)
        self.latencies.append(rule)
        return rule

    def clear(self) -> None:
        self.rules.clear()
        self.latencies.clear()

    def delay_for(self, method: str, path: str) -> float:
        return sum(r.seconds for r in self.latencies
                   if (r.method is None or r.method == method) and r.path.search(path))

    def check(self, method: str, path: str, target: Target) -> None:
        """Raise the ApiError of the first rule that fires for this request, if any."""
        for rule in self.rules:
            if rule.matches(method, path) and rule.fires():
                raise self._error(rule, target)

    @staticmethod
    def _error(rule: Fault, target: Target) -> ApiError:
        if rule.status == 409:
            return conflict(target.plural or "resources", target.group, target.name or "unknown", rule.message)
        message = rule.message or _MESSAGES[rule.status]
        if rule.status == 429:
            return ApiError(429, message, details={"causes": [{"message": message}], "retryAfterSeconds": 1},
                            headers={"Retry-After": "1"})
        if rule.status == 500:
            return ApiError(500, message, details={"causes": [{"message": message}]})
        return ApiError(rule.status, message, details={})
