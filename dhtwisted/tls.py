# -*- test-case-name: tests.test_tls -*-
"""
Mutual TLS between nodes, and TLS for clients, with Twisted's endpoints
and service_identity.

With C{[tls] ca, cert, key} set, a node dials its peers over TLS showing
its certificate, and its port takes TLS connections beside plain ones (a
TLS client hello starts with byte 0x16, which no dhtwisted or Redis client
sends first). Both ends check the other's certificate against the cluster
CA; then each checks, with service_identity, that the certificate names
the member the other end claims to be in its Hello or Welcome
(L{dhtwisted.certs.tls_name}): a valid certificate for node A cannot speak
as node B. A peer link without TLS, or without a certificate, is refused.
Clients may use TLS, with or without a certificate of their own.
"""

from __future__ import annotations

from typing import Any, Optional

from service_identity import CertificateError, VerificationError
from service_identity.pyopenssl import verify_hostname
from twisted.internet import ssl
from twisted.internet.interfaces import ISSLTransport
from twisted.python.failure import Failure

from .certs import tls_name

__all__ = ["TLS_FIRST_BYTE", "TLSSettings", "tls_failure"]

#: The first byte of a TLS connection (a handshake record).
TLS_FIRST_BYTE = b"\x16"


class TLSSettings:
    """
    A node's CA, certificate and key, loaded.

    :raises ValueError: naming the file that cannot be read or used.
    """

    def __init__(self, ca: str, cert: str, key: str) -> None:
        self.paths = (ca, cert, key)
        ca_pem = _read(ca, "ca")
        try:
            self.ca = ssl.Certificate.loadPEM(ca_pem)
        except Exception as e:
            raise ValueError(f"{ca} is not a PEM certificate: {e}") from None
        pem = _read(cert, "cert") + b"\n" + _read(key, "key")
        try:
            self.own = ssl.PrivateCertificate.loadPEM(pem)
        except Exception as e:
            raise ValueError(f"{cert} and {key} are not a certificate and its key: "
                             f"{e}") from None

    def server_options(self) -> ssl.CertificateOptions:
        """
        For the node's port: its certificate; a client certificate is asked
        for and checked against the CA, but not required (peers are
        checked for one on their Hello).
        """
        # (trustRoot would require a certificate of every client)
        return ssl.CertificateOptions(
            privateKey=self.own.privateKey.original, certificate=self.own.original,
            verify=True, caCerts=[self.ca.original], requireCertificate=False)

    def client_options(self) -> ssl.CertificateOptions:
        """
        For dialling a peer: its certificate, checked against the CA, is
        then checked against the member it claims to be.
        """
        return ssl.CertificateOptions(
            privateKey=self.own.privateKey.original, certificate=self.own.original,
            trustRoot=ssl.trustRootFromCertificates([self.ca]))

    def refusal(self, transport: Any, node_id: str) -> Optional[str]:
        """
        Why the peer at the other end of C{transport}, claiming to be
        C{node_id}, must be refused; C{None} if its certificate names it.
        """
        if not ISSLTransport.providedBy(transport):
            return "this cluster's nodes speak TLS to each other"
        if transport.getPeerCertificate() is None:
            return "it showed no certificate"
        if node_id != node_id.lower():
            # (certificate names ignore case: one for "a" would pass as "A")
            return f"node id {node_id} is not lower case, as TLS needs"
        try:
            verify_hostname(transport.getHandle(), tls_name(node_id))
        except (VerificationError, CertificateError):
            return f"its certificate does not name node {node_id} ({tls_name(node_id)})"
        return None


def tls_failure(reason: Failure) -> str:
    """
    A failed TLS handshake, for a log line: what OpenSSL said.
    """
    detail = reason.value.args[0] if reason.value.args else ""
    if isinstance(detail, list):
        said = "; ".join(str(item[-1]) for item in detail if isinstance(item, tuple))
    else:
        said = str(detail)
    return f"TLS handshake failed ({said or type(reason.value).__name__})"


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"cannot read the {what} file {path}: {e.strerror}") from None
