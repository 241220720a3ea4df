"""Test TLS material: a throwaway CA (trustme), serving certificates for 127.0.0.1/localhost written to files, and
the client-side SSL context that trusts them."""
from __future__ import annotations

import asyncio
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import trustme

SERVING_NAMES = ("127.0.0.1", "localhost")


def _write_atomically(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, as kubelet's secret volumes and cert-manager do."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass
class TlsFiles:
    """A CA plus a serving certificate/key pair written to `cert_path`/`key_path`.

    `rotate()` issues a fresh certificate from the same CA and replaces both files; `serial` is the serial number
    of the certificate currently on disk, for asserting which certificate a server presented.
    """

    directory: Path
    ca: trustme.CA = field(default_factory=trustme.CA)
    serial: int = 0

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rotate()

    @property
    def cert_path(self) -> Path:
        return self.directory / "tls.crt"

    @property
    def key_path(self) -> Path:
        return self.directory / "tls.key"

    @property
    def ca_path(self) -> Path:
        return self.directory / "ca.crt"

    def issue(self) -> tuple[bytes, bytes, int]:
        """A new leaf for SERVING_NAMES: (chain PEM, key PEM, serial), not yet written anywhere."""
        leaf = self.ca.issue_cert(*SERVING_NAMES)
        chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
        return chain, leaf.private_key_pem.bytes(), _serial_of(leaf.cert_chain_pems[0].bytes())

    def rotate(self) -> int:
        """Replace cert and key with a newly issued pair (key first, then cert); returns the new serial."""
        chain, key, serial = self.issue()
        _write_atomically(self.key_path, key)
        _write_atomically(self.cert_path, chain)
        self.ca.cert_pem.write_to_path(str(self.ca_path))
        self.serial = serial
        return serial

    def client_context(self) -> ssl.SSLContext:
        """What a client that trusts this CA uses (hostname checking on, as the API server does)."""
        return client_ssl_context(self.ca)


def _serial_of(pem: bytes) -> int:
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem).serial_number


def client_ssl_context(ca: trustme.CA) -> ssl.SSLContext:
    """An aiohttp/asyncio client SSL context trusting `ca` only."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(ctx)
    return ctx


async def served_serial(host: str, port: int, ctx: ssl.SSLContext) -> int:
    """Open a NEW TLS connection and return the serial number of the certificate the server presented."""
    from cryptography import x509

    _, writer = await asyncio.open_connection(host, port, ssl=ctx)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass
    return x509.load_der_x509_certificate(der).serial_number
