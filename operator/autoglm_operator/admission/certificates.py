"""The webhook's TLS: a self-signed CA and a serving certificate, made with ``cryptography``
(kopf[dev]'s builder fails on OpenSSL 3). Existing files are reused until near expiry.

A read-only folder (a mounted Secret: the chart's, or cert-manager's) is never written: its
certificate is used while valid and reloaded when the Secret changes, without a restart."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..api.clock import SYSTEM_CLOCK, Clock


@dataclass(frozen=True)
class WebhookCertificate:
    certfile: Path
    keyfile: Path
    ca_pem: bytes

    @property
    def ca_bundle(self) -> str:
        """Base64 of the CA, for ``clientConfig.caBundle``."""
        return base64.b64encode(self.ca_pem).decode()


def _valid(cert_path: Path, hosts: list[str], now: datetime.datetime, min_days: int = 30) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return False
    remaining = cert.not_valid_after_utc - now
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    names = {str(n) for n in sans.get_values_for_type(x509.DNSName)}
    names |= {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    return remaining.days >= min_days and set(hosts) <= names


log = logging.getLogger(__name__)


class CertificateError(RuntimeError):
    pass


def ensure_webhook_certificate(directory: Path, hosts: list[str], days: int = 365,
                               clock: Clock = SYSTEM_CLOCK) -> WebhookCertificate:
    now = clock.now()
    directory.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = directory / "ca.crt", directory / "tls.crt", directory / "tls.key"
    if not os.access(directory, os.W_OK):  # provided by a Secret: use it while valid, never write
        if ca_file.exists() and key_file.exists() and _valid(cert_file, hosts, now, min_days=0):
            return WebhookCertificate(cert_file, key_file, ca_file.read_bytes())
        raise CertificateError(
            f"the webhook certificate in {directory} (read-only, so not renewed here) is missing, expired, or does "
            f"not name {', '.join(hosts)}: renew the Secret mounted there (cert-manager renews it by itself), "
            "or point --webhook-cert-dir at a writable folder for a self-signed certificate")
    if ca_file.exists() and key_file.exists() and _valid(cert_file, hosts, now):
        return WebhookCertificate(cert_file, key_file, ca_file.read_bytes())
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "autoglm-operator-webhook-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=days * 5))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    ca_file.write_bytes(ca_pem)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + ca_pem)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return WebhookCertificate(cert_file, key_file, ca_pem)


class ReloadingServerContext:
    """The webhook server's TLS context, reloaded in place when the certificate files change (a
    rotated Secret): handshakes after the reload present the new certificate, connections already
    open keep theirs, and the server never restarts. A half-written pair is skipped until whole."""

    def __init__(self, certfile: Path, keyfile: Path, client_ca: Path | None = None):
        self.certfile, self.keyfile = certfile, keyfile
        self.context = ssl.create_default_context(purpose=ssl.Purpose.CLIENT_AUTH)
        if client_ca is not None:  # only clients with a certificate this CA signed get past the handshake
            self.context.verify_mode = ssl.CERT_REQUIRED
            self.context.load_verify_locations(cafile=str(client_ca))
        self._loaded: tuple[bytes, bytes] | None = None
        self.reloads = 0
        self.reload()

    def reload(self) -> bool:
        current = (self.certfile.read_bytes(), self.keyfile.read_bytes())
        if current == self._loaded:
            return False
        # Check the pair on a scratch context first: a failed load leaves a context half-changed
        # (the new certificate with the old key), which would fail every handshake.
        ssl.create_default_context(purpose=ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(self.certfile),
                                                                                   str(self.keyfile))
        self.context.load_cert_chain(str(self.certfile), str(self.keyfile))
        first = self._loaded is None
        self._loaded = current
        if not first:
            self.reloads += 1
            log.warning("webhook certificate reloaded from %s", self.certfile)
        return True

    async def watch(self, interval: float = 5.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                self.reload()
            except (OSError, ssl.SSLError) as e:
                log.warning("webhook certificate in %s not reloaded (keeping the previous one): %s", self.certfile, e)
