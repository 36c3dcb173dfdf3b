"""A throw-away certificate authority for the local secured broker (`ringback kafka start --secure`).

`make_broker_tls(folder)` writes, once:

* `ca.pem`: a self-signed CA (what clients trust: KAFKA_SSL_CA_FILE);
* `broker.pem`: the broker's private key and certificate, signed by that CA, for 127.0.0.1 and
  localhost (clients verify the name), usable as server and as client certificate (the broker
  authenticates itself to its own controller with it).

Development and tests only: keys unencrypted, readable by the owner only, valid for 30 days.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BROKER_COMMON_NAME = "ringback-local-broker"
VALID_FOR = datetime.timedelta(days=30)


@dataclass(frozen=True)
class BrokerTls:
    ca_file: Path
    keystore_file: Path  # the broker's key, then its certificate (Kafka's PEM keystore)

    @property
    def principal(self) -> str:
        """The broker's principal on an SSL listener (Kafka's default mapping of the subject)."""
        return f"User:CN={BROKER_COMMON_NAME}"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    pkcs8 = serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption())


def _write_private(path: Path, data: bytes) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, 0o600)


def make_broker_tls(folder: Path) -> BrokerTls:
    """The CA and the broker's key and certificate in `folder` (made the first time)."""
    tls = BrokerTls(folder / "ca.pem", folder / "broker.pem")
    if tls.ca_file.exists() and tls.keystore_file.exists():
        return tls
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("ringback local Kafka CA"))
        .issuer_name(_name("ringback local Kafka CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(BROKER_COMMON_NAME))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    tls.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_private(tls.keystore_file, _pem_key(key) + cert.public_bytes(serialization.Encoding.PEM))
    return tls
