# -*- test-case-name: tests.test_handshake -*-
"""
The opening of a peer link, before any message: who speaks which protocol
version, and, with a cluster secret, a challenge-response that proves both
ends know it.

Each end sends a preamble: the magic C{\\0DHT}, the protocol version (2
bytes), its mode (1 byte: 0 without a secret, 1 with one) and a fresh
16-byte nonce. The dialling end sends first; the accepting end answers once
it has read it. With secrets on both ends, each then proves it knows one
with an HMAC-SHA256 over both nonces and its role: the dialler first, then
the acceptor once the dialler's proof checks out. So a node proves nothing
to whoever connects to it (its proof, over a nonce the other end chose,
would let that end guess the secret offline); the dialler dials members it
learnt of from authenticated gossip, or its seeds. The acceptor reads no
message before the dialler's proof checks out, nor the dialler before the
acceptor's.

A node has one secret it proves with and may accept others: a cluster
rotating its secret accepts the old and the new one for a while.

Pure: bytes in, bytes out; the caller passes the nonce in.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Optional, Sequence

__all__ = ["NONCE_SIZE", "PREAMBLE_SIZE", "Handshake", "HandshakeError", "MAGIC",
           "PROTOCOL_VERSION", "preamble"]

#: What a peer link starts with (see L{dhtwisted.server.PEER_MAGIC}).
MAGIC = b"\x00DHT"
#: The peer protocol's version: nodes of another version refuse the link.
PROTOCOL_VERSION = 4
NONCE_SIZE = 16
_HEAD = struct.Struct(">4sHB16s")
#: Bytes of a preamble.
PREAMBLE_SIZE = _HEAD.size
_PROOF_SIZE = hashlib.sha256().digest_size
_OPEN, _SECRET = 0, 1


class HandshakeError(Exception):
    """
    The link must close: the other end speaks another version, has no
    secret where this one has (or the reverse), or does not know one this
    end accepts.

    :ivar reply: bytes to send before closing, so the other end can say why.
    :ivar kind: what went wrong, for logging each kind once (the message
        may hold what the other end sent).
    """

    def __init__(self, message: str, reply: bytes = b"", kind: str = "") -> None:
        super().__init__(message)
        self.reply = reply
        self.kind = kind or message


def preamble(secret: bool, nonce: bytes) -> bytes:
    """
    The preamble of a node with a cluster secret or without.
    """
    return _HEAD.pack(MAGIC, PROTOCOL_VERSION, _SECRET if secret else _OPEN, nonce)


def _proof(secret: bytes, role: bytes, dialer_nonce: bytes, acceptor_nonce: bytes) -> bytes:
    message = b"dhtwisted peer link v%d %s " % (PROTOCOL_VERSION, role)
    return hmac.new(secret, message + dialer_nonce + acceptor_nonce, hashlib.sha256).digest()


class Handshake:
    """
    One end's side of the opening.

    :param dialer: whether this end dialled.
    :param secrets: the secrets this end accepts, the one it proves with
        first; none: the cluster has no secret.
    :param nonce: C{NONCE_SIZE} fresh random bytes.
    """

    def __init__(self, dialer: bool, secrets: Sequence[bytes], nonce: bytes) -> None:
        if len(nonce) != NONCE_SIZE:
            raise ValueError("a nonce is 16 bytes")
        self.dialer = dialer
        self.secrets = list(secrets)
        self.nonce = nonce
        self.done = False
        #: the secret the other end proved it knows, once it has
        self.proven: Optional[bytes] = None
        self._mode = _SECRET if self.secrets else _OPEN
        self._buf = b""
        self._their_nonce = b""
        self._need = PREAMBLE_SIZE  # bytes before the next step
        self._step = self._their_preamble

    def start(self) -> bytes:
        """
        What this end sends first: the dialler's preamble; nothing from the
        acceptor, which answers the dialler's.
        """
        return self._preamble() if self.dialer else b""

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """
        Take bytes from the other end.

        :return: the bytes to send, and those that came after the
            handshake (the first messages), once L{done}.
        :raises HandshakeError: if the link must close.
        """
        self._buf += data
        out = b""
        while not self.done and len(self._buf) >= self._need:
            chunk, self._buf = self._buf[: self._need], self._buf[self._need:]
            out += self._step(chunk)
        if self.done:
            rest, self._buf = self._buf, b""
            return out, rest
        return out, b""

    @property
    def pending(self) -> bool:
        """
        Whether this end may not send messages yet. (A dialler without a
        secret sends its hello right after its preamble.)
        """
        return not self.done and (self._mode == _SECRET or not self.dialer)

    def _preamble(self) -> bytes:
        return preamble(self._mode == _SECRET, self.nonce)

    def _nonces(self) -> tuple[bytes, bytes]:
        if self.dialer:
            return self.nonce, self._their_nonce
        return self._their_nonce, self.nonce

    def _their_preamble(self, chunk: bytes) -> bytes:
        magic, version, mode, nonce = _HEAD.unpack(chunk)
        reply = b"" if self.dialer else self._preamble()
        if magic != MAGIC:
            raise HandshakeError("not a dhtwisted peer")
        if version != PROTOCOL_VERSION:
            raise HandshakeError(f"it speaks peer protocol version {version}, this node "
                                 f"{PROTOCOL_VERSION}", reply, kind="version")
        if mode != self._mode:
            if mode == _OPEN:
                raise HandshakeError("it has no cluster secret, this node has one", reply)
            if mode == _SECRET:
                raise HandshakeError("it has a cluster secret, this node has none", reply)
            raise HandshakeError(f"unknown mode {mode}", reply, kind="mode")
        self._their_nonce = nonce
        if self._mode == _OPEN:
            self.done = True
            return reply
        self._need = _PROOF_SIZE
        self._step = self._their_proof
        if not self.dialer:
            return reply
        dialer_nonce, acceptor_nonce = self._nonces()
        return _proof(self.secrets[0], b"dialer", dialer_nonce, acceptor_nonce)

    def _their_proof(self, proof: bytes) -> bytes:
        dialer_nonce, acceptor_nonce = self._nonces()
        role = b"acceptor" if self.dialer else b"dialer"
        for secret in self.secrets:
            if hmac.compare_digest(proof, _proof(secret, role, dialer_nonce, acceptor_nonce)):
                self.proven = secret
                break
        else:
            raise HandshakeError("it does not know the cluster secret", kind="secret")
        self.done = True
        if self.dialer:
            return b""
        return _proof(self.secrets[0], b"acceptor", dialer_nonce, acceptor_nonce)
