"""`burstflow certs`: the CA and serving certificate work for real TLS clients, renew, rotate, and install."""
from __future__ import annotations

import base64
import ssl
import stat
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web
from cryptography import x509

from burstflow import certs
from burstflow.cli import main
from burstflow.kube import MUTATING_WEBHOOKS, Resource

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
SERVICE_NAMES = [
    "burstflow-webhook",
    "burstflow-webhook.burstflow-system",
    "burstflow-webhook.burstflow-system.svc",
    "burstflow-webhook.burstflow-system.svc.cluster.local",
]
SECRETS = Resource("", "v1", "secrets", "Secret")


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def san_names(cert: x509.Certificate) -> list[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [*ext.get_values_for_type(x509.DNSName), *(str(ip) for ip in ext.get_values_for_type(x509.IPAddress))]


def test_service_dns_names_cover_every_form_a_client_may_use():
    assert certs.service_dns_names("burstflow-webhook", "burstflow-system") == SERVICE_NAMES


def test_generate_writes_a_ca_a_serving_cert_the_secret_and_the_cabundle_patch(tmp_path):
    result = certs.generate(tmp_path, now=NOW, days=30, extra_names=["127.0.0.1"])
    ca, serving = load(tmp_path / "ca.crt"), load(tmp_path / "tls.crt")
    serving.verify_directly_issued_by(ca)
    assert san_names(serving) == [*SERVICE_NAMES, "127.0.0.1"]
    assert serving.not_valid_after_utc == NOW + timedelta(days=30)
    assert serving.not_valid_before_utc <= NOW
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert serving.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert result.ca_created and result.ca_bundle == (tmp_path / "ca.crt").read_bytes()
    for private in ("ca.key", "tls.key", "secret.yaml"):
        assert stat.S_IMODE((tmp_path / private).stat().st_mode) == 0o600, private

    secret = yaml.safe_load((tmp_path / "secret.yaml").read_text())
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"] == {"name": "burstflow-webhook-tls", "namespace": "burstflow-system",
                                  "labels": {"app.kubernetes.io/name": "burstflow-webhook"}}
    assert base64.b64decode(secret["data"]["tls.crt"]) == (tmp_path / "tls.crt").read_bytes()
    assert base64.b64decode(secret["data"]["tls.key"]) == (tmp_path / "tls.key").read_bytes()
    assert base64.b64decode(secret["data"]["ca.crt"]) == (tmp_path / "ca.crt").read_bytes()

    patch = yaml.safe_load((tmp_path / "cabundle-patch.yaml").read_text())
    assert patch == {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "burstflow-webhook"},
        "webhooks": [{"name": "pods.burstflow.io",
                      "clientConfig": {"caBundle": base64.b64encode(result.ca_bundle).decode()}}],
    }


async def _serve_tls(cert_dir: Path) -> tuple[web.AppRunner, int]:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_dir / "tls.crt", cert_dir / "tls.key")
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


async def _get(port: int, *, cafile: Path, server_hostname: str) -> str:
    context = ssl.create_default_context(cafile=str(cafile))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"https://127.0.0.1:{port}/healthz", ssl=context,
                               server_hostname=server_hostname) as response:
            return await response.text()


@pytest.mark.parametrize("name", SERVICE_NAMES)
async def test_a_tls_client_trusting_the_ca_accepts_every_service_name(tmp_path, name):
    certs.generate(tmp_path, now=datetime.now(timezone.utc))
    runner, port = await _serve_tls(tmp_path)
    try:
        assert await _get(port, cafile=tmp_path / "ca.crt", server_hostname=name) == "ok"
    finally:
        await runner.cleanup()


async def test_a_tls_client_rejects_a_name_the_certificate_does_not_carry(tmp_path):
    certs.generate(tmp_path, now=datetime.now(timezone.utc))
    runner, port = await _serve_tls(tmp_path)
    try:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await _get(port, cafile=tmp_path / "ca.crt", server_hostname="other.burstflow-system.svc")
    finally:
        await runner.cleanup()


def test_running_again_renews_the_serving_cert_and_keeps_the_ca_and_cabundle(tmp_path):
    first = certs.generate(tmp_path, now=NOW)
    ca_before, tls_before = (tmp_path / "ca.crt").read_bytes(), (tmp_path / "tls.crt").read_bytes()
    second = certs.generate(tmp_path, now=NOW + timedelta(days=300))
    assert not second.ca_created
    assert (tmp_path / "ca.crt").read_bytes() == ca_before
    assert (tmp_path / "tls.crt").read_bytes() != tls_before
    assert second.ca_bundle == first.ca_bundle
    load(tmp_path / "tls.crt").verify_directly_issued_by(load(tmp_path / "ca.crt"))
    assert second.not_after == NOW + timedelta(days=300 + certs.DEFAULT_DAYS)


def test_rotate_ca_keeps_the_old_ca_trusted_until_it_is_removed(tmp_path):
    certs.generate(tmp_path, now=NOW)
    old_ca = (tmp_path / "ca.crt").read_bytes()
    old_serving = load(tmp_path / "tls.crt")
    rotated = certs.generate(tmp_path, now=NOW + timedelta(days=10), rotate_ca=True)
    assert rotated.ca_created
    assert (tmp_path / "previous-ca.crt").read_bytes() == old_ca
    assert (tmp_path / "ca.crt").read_bytes() != old_ca
    bundle = x509.load_pem_x509_certificates(rotated.ca_bundle)
    assert len(bundle) == 2
    # Both the serving certificate still mounted in running pods and the new one verify against caBundle.
    old_serving.verify_directly_issued_by(bundle[1])
    load(tmp_path / "tls.crt").verify_directly_issued_by(bundle[0])

    (tmp_path / "previous-ca.crt").unlink()
    finished = certs.generate(tmp_path, now=NOW + timedelta(days=11))
    assert len(x509.load_pem_x509_certificates(finished.ca_bundle)) == 1


def test_an_expired_previous_ca_leaves_the_bundle(tmp_path):
    certs.generate(tmp_path, now=NOW, ca_days=30, days=10)
    certs.generate(tmp_path, now=NOW + timedelta(days=5), rotate_ca=True, days=10)
    later = certs.generate(tmp_path, now=NOW + timedelta(days=40), days=10)
    assert len(x509.load_pem_x509_certificates(later.ca_bundle)) == 1


def test_a_ca_expiring_before_the_serving_cert_is_refused_with_the_way_out(tmp_path):
    certs.generate(tmp_path, now=NOW, ca_days=100, days=10)
    with pytest.raises(certs.CertsError, match=r"expires .* before a 365-day serving certificate.*--rotate-ca"):
        certs.generate(tmp_path, now=NOW)


def test_half_a_ca_is_refused(tmp_path):
    certs.generate(tmp_path, now=NOW)
    (tmp_path / "ca.key").unlink()
    with pytest.raises(certs.CertsError, match="only one of ca.crt and ca.key"):
        certs.generate(tmp_path, now=NOW)


def test_a_corrupt_ca_is_refused(tmp_path):
    certs.generate(tmp_path, now=NOW)
    (tmp_path / "ca.crt").write_text("not a certificate")
    with pytest.raises(certs.CertsError, match="not a PEM certificate"):
        certs.generate(tmp_path, now=NOW)


def test_cli_generate_with_custom_names_and_validity(tmp_path, capsys):
    out = tmp_path / "gen"
    code = main(["certs", "generate", "--out", str(out), "--service", "hook", "--namespace", "ops", "--days", "7",
                 "--secret-name", "hook-tls", "--webhook-config", "hook-cfg", "--extra-name", "10.0.0.5"])
    assert code == 0
    serving = load(out / "tls.crt")
    assert san_names(serving) == [*certs.service_dns_names("hook", "ops"), "10.0.0.5"]
    lifetime = serving.not_valid_after_utc - serving.not_valid_before_utc
    assert lifetime == timedelta(days=7) + certs.BACKDATE
    assert yaml.safe_load((out / "secret.yaml").read_text())["metadata"]["name"] == "hook-tls"
    assert yaml.safe_load((out / "cabundle-patch.yaml").read_text())["metadata"]["name"] == "hook-cfg"
    assert "created a new CA" in capsys.readouterr().out


def test_cli_reports_a_refusal_without_a_traceback(tmp_path, capsys):
    assert main(["certs", "generate", "--out", str(tmp_path), "--days", "0"]) == 2
    assert "validity must be at least one day" in capsys.readouterr().err


def test_cli_install_without_generated_files_says_what_to_run(tmp_path, capsys):
    assert main(["certs", "install", "--out", str(tmp_path), "--kubeconfig", str(tmp_path / "none")]) == 2
    assert "run `burstflow certs generate" in capsys.readouterr().err


def _webhook_config(name: str) -> dict:
    # Selects no namespace, so registering it on a real cluster affects nothing.
    return {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": "pods.burstflow.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "failurePolicy": "Ignore", "timeoutSeconds": 1,
            "clientConfig": {"url": "https://127.0.0.1:1/mutate"},
            "namespaceSelector": {"matchLabels": {"burstflow.io/test-never": "true"}},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
        }],
    }


@pytest.mark.kube
async def test_install_creates_the_secret_then_replaces_it_and_sets_cabundle(kube, kubeconfig, namespace, tmp_path):
    config = f"bf-test-{uuid.uuid4().hex[:8]}"
    await kube.create(MUTATING_WEBHOOKS, _webhook_config(config))
    try:
        first = certs.generate(tmp_path, now=datetime.now(timezone.utc), namespace=namespace, webhook_config=config)
        done = await certs.install(kubeconfig=kubeconfig, out_dir=tmp_path)
        assert done[0] == f"created Secret {namespace}/burstflow-webhook-tls"
        stored = await kube.get(MUTATING_WEBHOOKS, config)
        assert base64.b64decode(stored["webhooks"][0]["clientConfig"]["caBundle"]) == first.ca_bundle
        assert stored["webhooks"][0]["clientConfig"]["url"] == "https://127.0.0.1:1/mutate"

        certs.generate(tmp_path, now=datetime.now(timezone.utc), namespace=namespace, webhook_config=config,
                       rotate_ca=True)
        done = await certs.install(kubeconfig=kubeconfig, out_dir=tmp_path)
        assert done[0] == f"replaced Secret {namespace}/burstflow-webhook-tls"
        secret = await kube.get(SECRETS, "burstflow-webhook-tls", namespace=namespace)
        assert base64.b64decode(secret["data"]["tls.crt"]) == (tmp_path / "tls.crt").read_bytes()
        stored = await kube.get(MUTATING_WEBHOOKS, config)
        assert len(x509.load_pem_x509_certificates(
            base64.b64decode(stored["webhooks"][0]["clientConfig"]["caBundle"]))) == 2
    finally:
        await kube.delete(MUTATING_WEBHOOKS, config)


@pytest.mark.kube
async def test_install_refuses_a_configuration_without_the_named_webhook(kube, kubeconfig, namespace, tmp_path):
    config = f"bf-test-{uuid.uuid4().hex[:8]}"
    await kube.create(MUTATING_WEBHOOKS, _webhook_config(config))
    try:
        certs.generate(tmp_path, now=datetime.now(timezone.utc), namespace=namespace, webhook_config=config,
                       webhook_names=["other.burstflow.io"])
        with pytest.raises(certs.CertsError, match="has no webhook named other.burstflow.io"):
            await certs.install(kubeconfig=kubeconfig, out_dir=tmp_path)
    finally:
        await kube.delete(MUTATING_WEBHOOKS, config)
