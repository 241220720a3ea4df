"""`burstflow certs`: a private CA and the webhook's serving certificate, its Secret and the `caBundle` patch.

Files written to the output directory (the self-signed overlay reads the last two):

    ca.crt, ca.key            the CA (reused on later runs, so renewing the serving certificate keeps caBundle)
    previous-ca.crt           the CA replaced by `--rotate-ca`, still trusted in caBundle until removed
    tls.crt, tls.key          the serving certificate (ECDSA P-256) for every DNS name of the webhook Service
    secret.yaml               the `kubernetes.io/tls` Secret the webhook Deployment mounts
    cabundle-patch.yaml       a kustomize patch setting `caBundle` on the MutatingWebhookConfiguration
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import ipaddress
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from burstflow import kube

DEFAULT_SERVICE = "burstflow-webhook"
DEFAULT_NAMESPACE = "burstflow-system"
DEFAULT_SECRET = "burstflow-webhook-tls"
DEFAULT_WEBHOOK_CONFIG = "burstflow-webhook"
DEFAULT_WEBHOOK_NAMES = ("pods.burstflow.io",)
# 1 year for the serving certificate (renew with the same command, the CA stays), 10 years for the CA.
DEFAULT_DAYS = 365
DEFAULT_CA_DAYS = 3650
# Certificates are valid from a little before "now", so a node whose clock lags the issuer's still accepts them.
BACKDATE = timedelta(minutes=5)


class CertsError(Exception):
    """A problem the user can fix (unreadable CA, CA expiring too soon); the message says what to do."""


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, PEM-encoded."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


@dataclass(frozen=True)
class Generated:
    """What `generate` wrote: the paths, and the PEM the API server must trust (`ca_bundle`)."""

    out_dir: Path
    ca_created: bool
    ca_bundle: bytes
    dns_names: tuple[str, ...]
    not_after: datetime
    files: tuple[Path, ...] = field(default=())


def service_dns_names(service: str, namespace: str) -> list[str]:
    """The names a client inside the cluster (and the API server) may use for a Service, shortest first."""
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def create_ca(*, common_name: str, now: datetime, days: int) -> Issued:
    """A self-signed CA certificate (path length 0: it signs serving certificates only)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue_serving_cert(ca: Issued, *, names: Sequence[str], now: datetime, days: int) -> Issued:
    """A server certificate signed by `ca` for `names` (DNS names, or IP addresses written as such).

    The first name is the subject CN; all names are subjectAltNames (clients only look at those).
    """
    if not names:
        raise CertsError("a serving certificate needs at least one DNS name or IP address")
    ca_cert = ca.cert
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=True, data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


class TlsDir:
    """A throwaway one-day CA and serving certificate for 127.0.0.1 / localhost, written to `directory` (tls.crt,
    tls.key): what `generate` does for a Service, for the demo, the pool benchmark and local runs."""

    def __init__(self, directory: Path) -> None:
        now = datetime.now(timezone.utc)
        ca = create_ca(common_name="burstflow-demo-ca", now=now, days=1)
        serving = issue_serving_cert(ca, names=["127.0.0.1", "localhost"], now=now, days=1)
        directory.mkdir(parents=True, exist_ok=True)
        self.cert_path = directory / "tls.crt"
        self.key_path = directory / "tls.key"
        self.cert_path.write_bytes(serving.cert_pem)
        self.key_path.write_bytes(serving.key_pem)
        self.ca_pem = ca.cert_pem


def secret_manifest(*, name: str, namespace: str, serving: Issued, ca_pem: bytes) -> dict:
    """The `kubernetes.io/tls` Secret the webhook mounts (`ca.crt` included, as cert-manager writes it)."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/name": "burstflow-webhook"}},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64(serving.cert_pem), "tls.key": b64(serving.key_pem), "ca.crt": b64(ca_pem)},
    }


def cabundle_patch(*, webhook_config: str, webhook_names: Sequence[str], ca_bundle: bytes) -> dict:
    """A strategic-merge patch setting `caBundle` on each named webhook (`webhooks` merges by `name`)."""
    encoded = base64.b64encode(ca_bundle).decode()
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": webhook_config},
        "webhooks": [{"name": name, "clientConfig": {"caBundle": encoded}} for name in webhook_names],
    }


def _still_valid(pem: bytes, now: datetime) -> bool:
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc > now


def _write(path: Path, data: bytes, *, private: bool = False) -> Path:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)
    return path


def generate(
    out_dir: Path,
    *,
    now: datetime,
    service: str = DEFAULT_SERVICE,
    namespace: str = DEFAULT_NAMESPACE,
    secret_name: str = DEFAULT_SECRET,
    webhook_config: str = DEFAULT_WEBHOOK_CONFIG,
    webhook_names: Sequence[str] = DEFAULT_WEBHOOK_NAMES,
    extra_names: Sequence[str] = (),
    days: int = DEFAULT_DAYS,
    ca_days: int = DEFAULT_CA_DAYS,
    rotate_ca: bool = False,
) -> Generated:
    """Write a serving certificate (and a CA when there is none) plus the Secret and caBundle patch to `out_dir`.

    An existing `ca.crt`/`ca.key` pair is reused, so running this again renews only the serving certificate and
    caBundle stays the same. `rotate_ca` makes a new CA and keeps the old one as `previous-ca.crt`; caBundle holds
    every CA that is still valid among the two, so the API server trusts the old and the new serving certificate
    while the new Secret propagates. Raises `CertsError` when the CA would expire before the serving certificate.
    """
    if days < 1 or ca_days < 1:
        raise CertsError(f"validity must be at least one day (got --days {days}, --ca-days {ca_days})")
    out_dir.mkdir(parents=True, exist_ok=True)
    ca_crt, ca_key, previous = out_dir / "ca.crt", out_dir / "ca.key", out_dir / "previous-ca.crt"
    written: list[Path] = []
    ca_created = False
    if ca_crt.exists() != ca_key.exists():
        raise CertsError(f"{out_dir}: found only one of ca.crt and ca.key; restore the other or pass --rotate-ca")
    if ca_crt.exists() and not rotate_ca:
        ca = Issued(ca_crt.read_bytes(), ca_key.read_bytes())
        try:
            ca_not_after = ca.cert.not_valid_after_utc
        except ValueError as error:
            raise CertsError(f"{ca_crt}: not a PEM certificate ({error}); pass --rotate-ca to replace it") from None
        if ca_not_after < now + timedelta(days=days):
            raise CertsError(
                f"{ca_crt} expires {ca_not_after:%Y-%m-%d}, before a {days}-day serving certificate would: "
                "pass --rotate-ca (see 'Rotating certificates' in docs/install.md)"
            )
    else:
        if ca_crt.exists():
            written.append(_write(previous, ca_crt.read_bytes()))
        ca = create_ca(common_name=f"{service}-ca", now=now, days=ca_days)
        written += [_write(ca_crt, ca.cert_pem), _write(ca_key, ca.key_pem, private=True)]
        ca_created = True

    names = [*service_dns_names(service, namespace), *extra_names]
    serving = issue_serving_cert(ca, names=names, now=now, days=days)
    written += [_write(out_dir / "tls.crt", serving.cert_pem), _write(out_dir / "tls.key", serving.key_pem, private=True)]

    bundle = ca.cert_pem
    if previous.exists() and _still_valid(previous.read_bytes(), now):
        bundle += previous.read_bytes()
    secret = secret_manifest(name=secret_name, namespace=namespace, serving=serving, ca_pem=ca.cert_pem)
    patch = cabundle_patch(webhook_config=webhook_config, webhook_names=webhook_names, ca_bundle=bundle)
    header = b"# Written by `burstflow certs generate`; contains a private key: do not commit.\n"
    written.append(_write(out_dir / "secret.yaml", header + yaml.safe_dump(secret, sort_keys=False).encode(),
                          private=True))
    written.append(_write(out_dir / "cabundle-patch.yaml",
                          b"# Written by `burstflow certs generate`.\n" + yaml.safe_dump(patch, sort_keys=False).encode()))
    return Generated(
        out_dir=out_dir, ca_created=ca_created, ca_bundle=bundle, dns_names=tuple(names),
        not_after=serving.cert.not_valid_after_utc, files=tuple(written),
    )


async def install(*, kubeconfig: str | None, out_dir: Path) -> list[str]:
    """Apply `out_dir`'s Secret (create, or replace the existing one) and set caBundle on the webhooks named in its
    patch, through the API. Returns what was done, one line each. Needs rights the services do not have (secrets).
    """
    secrets = kube.SECRETS
    secret = yaml.safe_load((out_dir / "secret.yaml").read_text())
    patch = yaml.safe_load((out_dir / "cabundle-patch.yaml").read_text())
    wanted = {w["name"]: w["clientConfig"]["caBundle"] for w in patch["webhooks"]}
    done: list[str] = []
    client = await kube.Kube.connect(kubeconfig)
    try:
        meta = secret["metadata"]
        try:
            current = await client.get(secrets, meta["name"], namespace=meta["namespace"])
        except kube.NotFound:
            await client.create(secrets, secret, namespace=meta["namespace"])
            done.append(f"created Secret {meta['namespace']}/{meta['name']}")
        else:
            secret["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            await client.replace(secrets, secret, namespace=meta["namespace"])
            done.append(f"replaced Secret {meta['namespace']}/{meta['name']}")
        name = patch["metadata"]["name"]
        config = await client.get(kube.MUTATING_WEBHOOKS, name)
        found = {w["name"] for w in config.get("webhooks", [])}
        missing = sorted(set(wanted) - found)
        if missing:
            raise CertsError(f"MutatingWebhookConfiguration {name} has no webhook named {', '.join(missing)}; "
                             "apply the manifests first")
        for webhook in config["webhooks"]:
            if webhook["name"] in wanted:
                webhook.setdefault("clientConfig", {})["caBundle"] = wanted[webhook["name"]]
        await client.replace(kube.MUTATING_WEBHOOKS, config)
        done.append(f"set caBundle on MutatingWebhookConfiguration {name} ({', '.join(sorted(wanted))})")
    finally:
        await client.close()
    return done


def _cmd_generate(args: argparse.Namespace) -> int:
    try:
        result = generate(
            Path(args.out), now=datetime.now(timezone.utc), service=args.service, namespace=args.namespace,
            secret_name=args.secret_name, webhook_config=args.webhook_config, webhook_names=args.webhook_name or DEFAULT_WEBHOOK_NAMES,
            extra_names=args.extra_name, days=args.days, ca_days=args.ca_days, rotate_ca=args.rotate_ca,
        )
    except CertsError as error:
        print(f"burstflow certs generate: {error}", file=sys.stderr)
        return 2
    print(("created a new CA" if result.ca_created else "reused the CA") + f" in {result.out_dir}")
    print(f"serving certificate valid until {result.not_after:%Y-%m-%d %H:%M} UTC for: {', '.join(result.dns_names)}")
    for path in result.files:
        print(f"  wrote {path}")
    return 0


def _default_kubeconfig() -> str | None:
    """$KUBECONFIG's first file, else ~/.kube/config when it exists, else None (the in-cluster service account)."""
    if os.environ.get("KUBECONFIG"):
        return os.environ["KUBECONFIG"].split(os.pathsep)[0]
    home = Path.home() / ".kube" / "config"
    return str(home) if home.is_file() else None


def _cmd_install(args: argparse.Namespace) -> int:
    out_dir = Path(args.out)
    for needed in ("secret.yaml", "cabundle-patch.yaml"):
        if not (out_dir / needed).is_file():
            print(f"burstflow certs install: {out_dir / needed} not found; run `burstflow certs generate --out "
                  f"{out_dir}` first", file=sys.stderr)
            return 2
    try:
        for line in asyncio.run(install(kubeconfig=args.kubeconfig or _default_kubeconfig(), out_dir=out_dir)):
            print(line)
    except (CertsError, kube.KubeError, kube.ConfigError) as error:
        print(f"burstflow certs install: {error}", file=sys.stderr)
        return 1
    return 0


def register(commands) -> None:
    """Add `burstflow certs generate` and `burstflow certs install`."""
    certs = commands.add_parser("certs", help="create and install the webhook's serving certificate")
    sub = certs.add_subparsers(dest="certs_command", required=True, metavar="SUBCOMMAND")
    default_out = "manifests/overlays/self-signed/generated"

    gen = sub.add_parser(
        "generate",
        help="create a CA (once) and a serving certificate; write the Secret and the caBundle patch",
        description="Create a CA (reused on later runs) and a serving certificate for the webhook Service, and "
        "write secret.yaml and cabundle-patch.yaml for the self-signed overlay.",
    )
    gen.add_argument("--out", default=default_out, help=f"output directory (default: {default_out})")
    gen.add_argument("--service", default=DEFAULT_SERVICE, help="webhook Service name (default: %(default)s)")
    gen.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="its namespace (default: %(default)s)")
    gen.add_argument("--secret-name", default=DEFAULT_SECRET, help="TLS Secret name (default: %(default)s)")
    gen.add_argument("--webhook-config", default=DEFAULT_WEBHOOK_CONFIG,
                     help="MutatingWebhookConfiguration name (default: %(default)s)")
    gen.add_argument("--webhook-name", action="append", default=None,
                     help="webhook entry to patch (repeatable; default: pods.burstflow.io)")
    gen.add_argument("--extra-name", action="append", default=[], metavar="NAME_OR_IP",
                     help="another DNS name or IP address for the certificate (repeatable), e.g. for a webhook "
                     "registered by URL")
    gen.add_argument("--days", type=int, default=DEFAULT_DAYS, help="serving certificate validity (default: %(default)s)")
    gen.add_argument("--ca-days", type=int, default=DEFAULT_CA_DAYS, help="new CA validity (default: %(default)s)")
    gen.add_argument("--rotate-ca", action="store_true",
                     help="make a new CA; the old one stays trusted (previous-ca.crt) until you delete it")
    gen.set_defaults(func=_cmd_generate)

    inst = sub.add_parser(
        "install",
        help="apply the generated Secret and caBundle to a cluster through the API",
        description="Create or replace the TLS Secret and set caBundle on the MutatingWebhookConfiguration "
        "(the same as `kubectl apply -k manifests/overlays/self-signed`, without kubectl).",
    )
    inst.add_argument("--out", default=default_out, help=f"directory written by `generate` (default: {default_out})")
    inst.add_argument("--kubeconfig", default=None,
                      help="kubeconfig path (default: $KUBECONFIG, else in-cluster / ~/.kube/config)")
    inst.set_defaults(func=_cmd_install)
