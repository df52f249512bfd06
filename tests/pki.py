"""Throwaway PKI for the web-security tests (the `cryptography` package):
a CA, certificates it signs for the server (127.0.0.1, localhost) and for
clients, and a foreign CA whose client certificates must be refused."""
from __future__ import annotations

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class CA:
    def __init__(self, cn: str = "test CA"):
        self.key = _key()
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=2))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(True, False, False, False, False, True, True,
                                                  False, False), critical=True)
                     .sign(self.key, hashes.SHA256()))

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, cn: str, *, server: bool = False, dns=(), ips=(), uris=(),
              emails=()) -> tuple:
        """(certificate PEM, key PEM)."""
        key = _key()
        now = datetime.datetime.now(datetime.timezone.utc)
        sans = ([x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i))
                                                   for i in ips]
                + [x509.UniformResourceIdentifier(u) for u in uris]
                + [x509.RFC822Name(e) for e in emails])
        b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self.cert.subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage(
                 [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                 critical=False))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)

    def write(self, directory: str, stem: str, pair: tuple) -> tuple:
        """Write (cert, key) as STEM.crt / STEM.key in *directory*; their paths."""
        paths = []
        for ext, data in zip(("crt", "key"), pair):
            p = os.path.join(directory, f"{stem}.{ext}")
            with open(p + ".tmp", "wb") as f:
                f.write(data)
            os.replace(p + ".tmp", p)      # atomic, as a secret mount or cert-manager does
            paths.append(p)
        return tuple(paths)


def server_pair(ca: CA, cn: str = "ipvs-exporter") -> tuple:
    return ca.issue(cn, server=True, dns=["localhost"], ips=["127.0.0.1", "::1"])
