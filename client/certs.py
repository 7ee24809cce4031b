"""Development certificates for trying TLS and mTLS locally (``stylecast certs dev DIR``).

Writes a private CA, a server certificate for ``localhost`` / 127.0.0.1 / ::1 and a client
certificate, all signed by that CA (ECDSA P-256, valid ``days`` days).  Not for production:
the CA key lies next to the certificates.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class DevCerts:
    """Paths of the written PEM files."""

    ca: Path            # ca.pem: give clients --tls-ca / ca=, the server --tls-client-ca for mTLS
    ca_key: Path
    server_cert: Path   # server.pem / server.key: --tls-cert / --tls-key
    server_key: Path
    client_cert: Path   # client.pem / client.key: a client's cert= / key= (--tls-cert / --tls-key)
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "stylecast dev"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write(path: Path, data: bytes, private: bool) -> None:
    path.write_bytes(data)
    if private:
        os.chmod(path, 0o600)


def _leaf(subject: str, issuer: x509.Certificate, issuer_key: ec.EllipticCurvePrivateKey, now: dt.datetime,
          days: int, usage: x509.ObjectIdentifier,
          hosts: Sequence[str] = ()) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                            data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                              critical=False))
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key


def write_dev_certs(folder: str | os.PathLike, hosts: Sequence[str] = DEFAULT_HOSTS, days: int = 30,
                    overwrite: bool = False) -> DevCerts:
    """Write ca.pem, ca.key, server.pem, server.key, client.pem, client.key into ``folder``.

    ``hosts``: DNS names and IP addresses the server certificate is valid for.  Raises
    ``FileExistsError`` when a file exists and ``overwrite`` is False, ``ValueError`` for
    ``days`` < 1 or no hosts."""
    if days < 1 or not hosts:
        raise ValueError("days must be >= 1 and at least one host given")
    out = Path(folder)
    paths = DevCerts(*(out / n for n in ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key")))
    existing = [p for p in vars(paths).values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(map(str, existing))} exist(s); pass overwrite to replace them")
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("stylecast dev CA")).issuer_name(_name("stylecast dev CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    server, server_key = _leaf(hosts[0], ca, ca_key, now, days, ExtendedKeyUsageOID.SERVER_AUTH, hosts)
    client, client_key = _leaf("stylecast dev client", ca, ca_key, now, days, ExtendedKeyUsageOID.CLIENT_AUTH)
    pem = serialization.Encoding.PEM
    _write(paths.ca, ca.public_bytes(pem), False)
    _write(paths.ca_key, _key_pem(ca_key), True)
    _write(paths.server_cert, server.public_bytes(pem), False)
    _write(paths.server_key, _key_pem(server_key), True)
    _write(paths.client_cert, client.public_bytes(pem), False)
    _write(paths.client_key, _key_pem(client_key), True)
    return paths
