# -*- test-case-name: tests.test_tls -*-
"""
C{dht-certs}: a throwaway certificate authority and certificates for
nodes and clients, for tests and local clusters (C{make certs}), made with
the C{cryptography} package.

A node's certificate names it as C{<node_id>.node.dhtwisted} (see
L{tls_name}), and as C{localhost} and 127.0.0.1 so that TLS clients such as
C{redis-cli --tls} can check the node they dial here. A real deployment
uses its own CA; only the name rule matters.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from typing import Optional, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["main", "make_ca", "make_cert", "tls_name", "write_set"]


def tls_name(node_id: str) -> str:
    """
    The DNS name a node's certificate must carry: its id under
    C{node.dhtwisted}. (A bare id such as C{0} is not a valid DNS name.)
    """
    return f"{node_id}.node.dhtwisted"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dhtwisted"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_ca(days: int = 30) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """
    A new certificate authority: its key and self-signed certificate.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    name = _name("dhtwisted throwaway CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                     crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False,
                                     decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_cert(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, common: str,
              dns_names: Sequence[str], ips: Sequence[str] = (), days: int = 30
              ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """
    A key and a certificate signed by the CA, for both ends of a TLS
    connection (a node dials and accepts), naming C{dns_names} and C{ips}.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common)).issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: str, data: bytes, private: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def write_set(out: str, nodes: Sequence[str], clients: Sequence[str] = ("client",),
              days: int = 30, ca: Optional[tuple] = None) -> dict[str, tuple[str, str]]:
    """
    Write C{ca.pem} (and C{ca.key}) and, for each node and client, C{<name>.pem}
    and C{<name>.key} into C{out}.

    :param ca: an existing CA's key and certificate to sign with, instead
        of a new one.
    :return: each name's certificate and key paths.
    """
    os.makedirs(out, exist_ok=True)
    ca_key, ca_cert = ca or make_ca(days)
    _write(os.path.join(out, "ca.pem"), _cert_pem(ca_cert))
    _write(os.path.join(out, "ca.key"), _key_pem(ca_key), private=True)
    paths = {}
    for name in list(nodes) + list(clients):
        dns = [tls_name(name), "localhost"] if name in nodes else [f"{name}.client.dhtwisted"]
        key, cert = make_cert(ca_key, ca_cert, name, dns, ["127.0.0.1", "::1"], days)
        cert_path, key_path = os.path.join(out, f"{name}.pem"), os.path.join(out, f"{name}.key")
        _write(cert_path, _cert_pem(cert))
        _write(key_path, _key_pem(key), private=True)
        paths[name] = (cert_path, key_path)
    return paths


def main(argv: Optional[Sequence[str]] = None) -> int:
    """
    C{dht-certs [--out DIR] [--days N] [--client NAME] NODE_ID...}.
    """
    parser = argparse.ArgumentParser(
        prog="dht-certs",
        description="Make a throwaway CA and certificates for dhtwisted nodes and clients "
                    "(for tests and local clusters).")
    parser.add_argument("nodes", nargs="+", metavar="NODE_ID")
    parser.add_argument("--out", default="certs", help="folder to write to (default certs)")
    parser.add_argument("--days", type=int, default=30, help="validity (default 30 days)")
    parser.add_argument("--client", action="append", default=None, metavar="NAME",
                        help="a client certificate to make too (default: one named client)")
    args = parser.parse_args(argv)
    paths = write_set(args.out, args.nodes, args.client or ["client"], args.days)
    print(f"{args.out}/ca.pem and {len(paths)} certificates: "
          + ", ".join(sorted(paths)), file=sys.stdout)
    return 0
