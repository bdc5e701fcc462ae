"""Certificates and keys of the dev cluster, made with ``cryptography``.

One CA signs the API server's serving certificate and the client certificates of the
admin user and of each control-plane component (so RBAC sees real identities). The
service-account signing key pair lets the API server issue tokens.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import NameOID

#: Client identities: file stem -> (common name, organisation).
CLIENTS = {
    "admin": ("kubernetes-admin", "system:masters"),
    "controller-manager": ("system:kube-controller-manager", None),
    "scheduler": ("system:kube-scheduler", None),
    "kwok": ("kwok-controller", "system:masters"),
    "kube-proxy": ("system:kube-proxy", None),
}
#: Where pods reach the API server: the real node's bridge address (see node.py).
POD_FACING_ADDRESS = "10.88.0.1"


@dataclass(frozen=True)
class ClusterPKI:
    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def apiserver_cert(self) -> Path:
        return self.directory / "apiserver.crt"

    @property
    def apiserver_key(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def service_account_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def service_account_pub(self) -> Path:
        return self.directory / "sa.pub"

    def client_cert(self, who: str) -> Path:
        return self.directory / f"{who}.crt"

    def client_key(self, who: str) -> Path:
        return self.directory / f"{who}.key"


def _write_key(path: Path, key: PrivateKeyTypes) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _sign(subject: x509.Name, public_key: CertificatePublicKeyTypes, ca_cert: x509.Certificate,
          ca_key: CertificateIssuerPrivateKeyTypes, *, server_names: tuple[str, ...] = (), ips: tuple[str, ...] = (),
          client: bool = False) -> x509.Certificate:
    """A certificate for ``subject`` signed by the CA: a client's, or a server's for ``server_names`` and ``ips``."""
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject)
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=365))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH if client
                                                     else x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    if server_names or ips:
        sans = [x509.DNSName(n) for n in server_names] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _new_ca(common_name: str, path_length: int | None = None) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA for ten years: its key and certificate."""
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(common_name)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def ensure_pki(directory: Path) -> ClusterPKI:
    """Create the cluster's CA, serving and client certificates unless they exist."""
    pki = ClusterPKI(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if pki.ca_cert.exists() and pki.client_cert("kube-proxy").exists() and pki.service_account_pub.exists():
        return pki
    ca_key, ca_cert = _new_ca("autoglm-dev-cluster-ca")
    _write_key(pki.ca_key, ca_key)
    pki.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _sign(_name("kube-apiserver"), server_key.public_key(), ca_cert, ca_key,
                        server_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                                      "kubernetes.default.svc.cluster.local"),
                        ips=("127.0.0.1", "10.96.0.1", POD_FACING_ADDRESS))
    _write_key(pki.apiserver_key, server_key)
    pki.apiserver_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))

    for who, (cn, org) in CLIENTS.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _sign(_name(cn, org), key.public_key(), ca_cert, ca_key, client=True)
        _write_key(pki.client_key(who), key)
        pki.client_cert(who).write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki.service_account_key, sa_key)
    pki.service_account_pub.write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return pki


def ensure_node_identity(cluster: ClusterPKI, node: str) -> tuple[Path, Path]:
    """A kubelet's client certificate (``system:node:NAME`` in ``system:nodes``), signed by the CA."""
    cert_path, key_path = cluster.client_cert(f"node-{node}"), cluster.client_key(f"node-{node}")
    if not cert_path.exists():
        ca_cert = x509.load_pem_x509_certificate(cluster.ca_cert.read_bytes())
        ca_key = serialization.load_pem_private_key(cluster.ca_key.read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey), "the CA's key is the EC key ensure_pki made"
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _sign(_name(f"system:node:{node}", "system:nodes"), key.public_key(), ca_cert, ca_key, client=True)
        _write_key(key_path, key)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


@dataclass(frozen=True)
class WebhookClient:
    """What the API server presents to admission webhooks (its --admission-control-config-file):
    a client certificate signed by a CA of its own, so a webhook that trusts this CA alone accepts
    the API server and no other client of the cluster."""

    ca_cert: Path
    cert: Path
    key: Path


def ensure_webhook_client(cluster: ClusterPKI) -> WebhookClient:
    client = WebhookClient(cluster.directory / "webhook-client-ca.crt", cluster.directory / "webhook-client.crt",
                           cluster.directory / "webhook-client.key")
    if client.ca_cert.exists() and client.cert.exists() and client.key.exists():
        return client
    cluster.directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _new_ca("autoglm-dev-webhook-client-ca", path_length=0)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _sign(_name("kube-apiserver-webhook-client"), key.public_key(), ca_cert, ca_key, client=True)
    _write_key(client.key, key)
    client.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    client.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return client


def write_kubeconfig(path: Path, *, cluster: str, server: str, ca: Path, user: str, cert: Path, key: Path) -> None:
    """A kubeconfig with one cluster, one client-certificate user and one context."""
    import yaml

    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster}))
