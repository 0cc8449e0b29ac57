"""Certificates for TLS engines in the tests: a CA, the server and client certificates it signs, and the bad ones.

Everything is generated fresh into one directory with the `cryptography` package, with the file names the docker CLI
expects under DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem) for the client side. Keys are P-256: quick to generate and
accepted by both Go's TLS stack in dockerd and OpenSSL in the check.

This module is not part of the wheel that goes into an Agent.
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

LOCAL_NAMES = ('localhost', '127.0.0.1')
ONE_DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


class CertificateAuthority:
    """A self-signed CA that writes itself and what it issues under `directory`."""

    def __init__(self, directory: str | Path, name: str):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = _name(name)
        now = _now()
        self._cert = (
            _builder(subject, subject, self._key.public_key(), now - ONE_DAY, now + 30 * ONE_DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
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
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_path = self.directory / f'{name}-ca.pem'
        self.cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        name: str,
        *,
        server: bool = False,
        hosts: tuple[str, ...] = (),
        valid_from: datetime.datetime | None = None,
        valid_until: datetime.datetime | None = None,
    ) -> KeyPair:
        """A leaf certificate for a server (with `hosts` as SANs) or, by default, for a client."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            _builder(
                _name(name),
                self._cert.subject,
                key.public_key(),
                valid_from or now - ONE_DAY,
                valid_until or now + 30 * ONE_DAY,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if hosts:
            builder = builder.add_extension(x509.SubjectAlternativeName([_san(host) for host in hosts]), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())

        pair = KeyPair(self.directory / f'{name}-cert.pem', self.directory / f'{name}-key.pem')
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pair.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        pair.key.chmod(0o600)
        return pair


@dataclass(frozen=True)
class TLSMaterial:
    """Everything a TLS test needs: a good chain, the bad certificates, and a CA that trusts none of them."""

    ca: Path
    server: KeyPair
    client: KeyPair
    expired_server: KeyPair
    misnamed_server: KeyPair
    other_ca: Path
    other_client: KeyPair
    docker_cert_path: Path


def generate(directory: str | Path) -> TLSMaterial:
    """Write a complete set under `directory`; `docker_cert_path` holds ca.pem, cert.pem and key.pem."""
    directory = Path(directory)
    ca = CertificateAuthority(directory, 'engines')
    other = CertificateAuthority(directory, 'unrelated')
    now = _now()

    client = ca.issue('client')
    docker_cert_path = directory / 'docker-cert-path'
    docker_cert_path.mkdir(exist_ok=True)
    for source, target in ((ca.cert_path, 'ca.pem'), (client.cert, 'cert.pem'), (client.key, 'key.pem')):
        (docker_cert_path / target).write_bytes(source.read_bytes())

    return TLSMaterial(
        ca=ca.cert_path,
        server=ca.issue('server', server=True, hosts=LOCAL_NAMES),
        client=client,
        expired_server=ca.issue(
            'expired-server',
            server=True,
            hosts=LOCAL_NAMES,
            valid_from=now - 30 * ONE_DAY,
            valid_until=now - ONE_DAY,
        ),
        misnamed_server=ca.issue('misnamed-server', server=True, hosts=('docker.example.com',)),
        other_ca=other.cert_path,
        other_client=other.issue('other-client'),
        docker_cert_path=docker_cert_path,
    )


def _builder(subject, issuer, public_key, valid_from, valid_until) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_until)
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
