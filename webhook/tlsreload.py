"""Serving-certificate hot reload: watch the cert/key files and switch new TLS handshakes to a freshly loaded context.

How the switch works: the listening `ssl.SSLContext` has an `sni_callback`, which OpenSSL runs during every
handshake (also when the client sends no server name, as when it dials an IP address). The callback points the
connection at the newest context (`SSLObject.context = ...`), so a rotation never touches a context that a
handshake may be using: new connections get the new certificate, established ones keep theirs, none is dropped.
A new context is built and fully loaded before it is published, so half-written or mismatched files are rejected
and the previous certificate stays in service.
"""
from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable
from pathlib import Path

from burstflow.clock import Clock

log = logging.getLogger(__name__)

FileSignature = tuple[tuple[int, int, int, int], ...]


def load_server_context(cert_file: str | os.PathLike, key_file: str | os.PathLike, *,
                        password: str | None = None) -> ssl.SSLContext:
    """A server context holding this cert/key pair; raises ssl.SSLError/OSError when they are unusable."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file, password=password or None)
    return context


def _signature(paths: tuple[Path, ...]) -> FileSignature:
    """(device, inode, size, mtime_ns) of each file, following symlinks (Secret volumes swap a `..data` link)."""
    out = []
    for path in paths:
        try:
            st = os.stat(path)
            out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((0, 0, -1, 0))
    return tuple(out)


class CertReloader:
    """Owns the listening SSL context and keeps it serving the certificate currently on disk.

    `context` is what the server listens with; `check()` reloads when the files changed since the last attempt
    and returns True only when a new certificate took effect; `run(clock, interval)` calls `check()` forever.
    A failed load is logged with its reason and not retried until the files change again.
    """

    def __init__(self, cert_file: str | os.PathLike, key_file: str | os.PathLike, *, password: str | None = None,
                 on_reload: Callable[[], None] | None = None) -> None:
        self._paths = (Path(cert_file), Path(key_file))
        self._password = password
        self._on_reload = on_reload
        self._seen = _signature(self._paths)
        self.context = load_server_context(*self._paths, password=password)
        self.context.sni_callback = self._select_context
        self._current = self.context
        self.last_error: str | None = None

    def _select_context(self, ssl_object: ssl.SSLObject, server_name: str | None,
                        context: ssl.SSLContext) -> None:
        current = self._current
        if current is not context:
            ssl_object.context = current
        return None

    def check(self) -> bool:
        """Reload if the files changed; True when the new certificate is now served to new connections."""
        signature = _signature(self._paths)
        if signature == self._seen:
            return False
        self._seen = signature
        try:
            fresh = load_server_context(*self._paths, password=self._password)
        except (ssl.SSLError, OSError, ValueError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.error("TLS reload failed, still serving the previous certificate: cert=%s key=%s: %s",
                      self._paths[0], self._paths[1], self.last_error)
            return False
        self._current = fresh
        self.last_error = None
        log.info("TLS certificate reloaded from %s", self._paths[0])
        if self._on_reload is not None:
            self._on_reload()
        return True

    async def run(self, clock: Clock, interval: float) -> None:
        """Poll every `interval` seconds of `clock` until cancelled."""
        while True:
            await clock.sleep(interval)
            try:
                self.check()
            except Exception:  # a reload must never take the server down
                log.exception("unexpected error while checking the TLS files")
