"""Throwaway certificates for tests: a CA, server certificates, and client certificates
carrying a Dapr-style SPIFFE ID (`spiffe://<trust-domain>/ns/<namespace>/<app-id>`).

Made with the `cryptography` package, fresh in every test run; nothing is checked in.
Imports neither grpc nor backend, so every test tree (and the conformance runner) can use it.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def spiffe_id(app_id: str, *, trust_domain: str = "public", namespace: str = "default") -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/{app_id}"


@dataclass(frozen=True)
class Pair:
    """A certificate and its key, as PEM files on disk."""

    cert: Path
    key: Path

    @property
    def cert_pem(self) -> bytes:
        return self.cert.read_bytes()

    @property
    def key_pem(self) -> bytes:
        return self.key.read_bytes()


class CA:
    """A self-signed CA that issues server and client certificates into `folder`."""

    def __init__(self, folder: Path, name: str = "test-ca", *, days: int = 2) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.name = name
        self._key = _key()
        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.cert = self.folder / f"{name}.pem"
        self.cert.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    @property
    def cert_pem(self) -> bytes:
        return self.cert.read_bytes()

    def _issue(
        self, stem: str, sans: list[x509.GeneralName], usage: x509.ObjectIdentifier, *, days: int
    ) -> Pair:
        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, stem)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        pair = Pair(cert=self.folder / f"{stem}.crt", key=self.folder / f"{stem}.key")
        pair.key.write_bytes(_key_pem(key))
        pair.key.chmod(0o600)
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return pair

    def server(
        self, stem: str = "server", *, hosts: tuple[str, ...] = ("localhost", "127.0.0.1"), days: int = 1
    ) -> Pair:
        """A server certificate valid for `hosts` (DNS names and IP addresses)."""
        sans: list[x509.GeneralName] = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        return self._issue(stem, sans, ExtendedKeyUsageOID.SERVER_AUTH, days=days)

    def client(
        self,
        app_id: str,
        *,
        trust_domain: str = "public",
        namespace: str = "default",
        uri: str | None = None,
        days: int = 1,
    ) -> Pair:
        """A client certificate whose URI SAN is the app's SPIFFE ID (or `uri` as given)."""
        name = uri or spiffe_id(app_id, trust_domain=trust_domain, namespace=namespace)
        return self._issue(
            f"client-{app_id}",
            [x509.UniformResourceIdentifier(name)],
            ExtendedKeyUsageOID.CLIENT_AUTH,
            days=days,
        )
