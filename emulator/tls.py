"""Key material the emulator creates in its data dir: a local CA, the HTTPS server certificate, the
client certificate of the seeded certificate app registration, and the token signing key.

Why a CA plus a leaf instead of one self-signed certificate: Python 3.13 verifies with
``VERIFY_X509_STRICT``, which rejects a self-signed leaf used as its own trust anchor. A proper CA
(basicConstraints critical, keyCertSign, SKI) with a leaf carrying AKI/SAN/serverAuth passes on 3.11-3.13.
The MSAL and Key Vault SDKs insist on HTTPS, so clients trust ``ca_file`` (see docs/emulator.md).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE = "emulator-ca.pem"
CA_KEY_FILE = "emulator-ca-key.pem"
SERVER_CERT_FILE = "emulator-tls-cert.pem"
SERVER_KEY_FILE = "emulator-tls-key.pem"
SIGNING_KEY_FILE = "token-signing-key.pem"

_ORG = "D365 F&O local emulator"


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path  # what clients trust (connection_verify / REQUESTS_CA_BUNDLE / SSL_CERT_FILE)
    cert_file: Path  # server certificate chain (leaf then CA), for uvicorn
    key_file: Path


@dataclass(frozen=True)
class ClientCertificate:
    """A PEM with the private key and the certificate, as azure-identity's CertificateCredential reads it."""

    path: Path
    certificate: x509.Certificate

    @property
    def thumbprint_sha1(self) -> str:
        return self.certificate.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - x5t is SHA-1 by spec


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes) -> None:
    """Write a file readable only by the owner (it holds a private key)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, days: int
) -> x509.CertificateBuilder:
    """A certificate for ``key``'s public key, valid from yesterday (clock skew) for ``days`` days."""
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _load_ca(data_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    cert_path, key_path = data_dir / CA_FILE, data_dir / CA_KEY_FILE
    if not (cert_path.exists() and key_path.exists()):
        return None
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except ValueError:
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    if cert.not_valid_after_utc - _now() < dt.timedelta(days=30):
        return None
    return cert, key


def _create_ca(data_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("D365 F&O emulator local CA")
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        _builder(name, name, key, days=3650)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    (data_dir / CA_FILE).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(data_dir / CA_KEY_FILE, private_key_pem(key))
    return cert, key


def _san_entries(hosts: list[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    seen: set[str] = set()
    for host in ["localhost", "127.0.0.1", "::1", *hosts]:
        if not host or host in seen or host in ("0.0.0.0", "::"):  # noqa: S104 - names, not a bind
            continue
        seen.add(host)
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return entries


def ensure_server_tls(data_dir: Path, hosts: list[str]) -> TlsFiles:
    """Reuse the CA found in ``data_dir`` (so a trusted ``ca_file`` stays valid across restarts), or create
    one; always issue a fresh server certificate for ``hosts`` (plus localhost, 127.0.0.1 and ::1)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ca = _load_ca(data_dir) or _create_ca(data_dir)
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        _builder(_name("localhost"), ca_cert.subject, key, days=365)
        .add_extension(x509.SubjectAlternativeName(_san_entries(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = data_dir / SERVER_CERT_FILE, data_dir / SERVER_KEY_FILE
    cert_file.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM)
    )
    _write_private(key_file, private_key_pem(key))
    return TlsFiles(ca_file=data_dir / CA_FILE, cert_file=cert_file, key_file=key_file)


def ensure_client_certificate(data_dir: Path, file_name: str, common_name: str) -> ClientCertificate:
    """The certificate an app registration authenticates with (client assertion signed RS256).

    Kept across restarts when present, so a configured ``certificate_path`` keeps working."""
    path = data_dir / file_name
    if path.exists():
        data = path.read_bytes()
        try:
            cert = x509.load_pem_x509_certificate(data)
            key = serialization.load_pem_private_key(data, password=None)
            if isinstance(key, rsa.RSAPrivateKey) and cert.not_valid_after_utc > _now():
                return ClientCertificate(path=path, certificate=cert)
        except ValueError:
            pass
    key, cert = self_signed_rsa(common_name, days=730)
    data_dir.mkdir(parents=True, exist_ok=True)
    _write_private(path, private_key_pem(key) + cert.public_bytes(serialization.Encoding.PEM))
    return ClientCertificate(path=path, certificate=cert)


def self_signed_rsa(common_name: str, *, days: int) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A new RSA key and a self-signed (non-CA) certificate for it, as a client authenticates with."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = _name(common_name)
    cert = (
        _builder(name, name, key, days=days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def private_key_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    """``key`` as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_or_create_signing_key(path: Path | None) -> rsa.RSAPrivateKey:
    """The RS256 key tokens are signed with; persisted so tokens survive an emulator restart."""
    if path is not None and path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if isinstance(key, rsa.RSAPrivateKey):
                return key
        except ValueError:
            pass
    return new_signing_key(path)


def new_signing_key(path: Path | None) -> rsa.RSAPrivateKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(path, private_key_pem(key))
    return key


def key_id(key: rsa.RSAPublicKey) -> str:
    """A stable ``kid`` for a public key (hash of its DER encoding)."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:32]
