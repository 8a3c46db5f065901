"""
The opening of a peer link (L{dhtwisted.handshake}): versions, modes, and
the cluster secret's challenge-response, including rotation.
"""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from dhtwisted.handshake import (
    MAGIC,
    PREAMBLE_SIZE,
    PROTOCOL_VERSION,
    Handshake,
    HandshakeError,
)

OLD = b"old secret, sixteen bytes at least"
NEW = b"new secret, sixteen bytes at least"


def pair(dialer_secrets: list[bytes], acceptor_secrets: list[bytes]
         ) -> tuple[Handshake, Handshake]:
    return (Handshake(True, dialer_secrets, os.urandom(16)),
            Handshake(False, acceptor_secrets, os.urandom(16)))


def run(dialer: Handshake, acceptor: Handshake, after: bytes = b"hello") -> tuple[bytes, bytes]:
    """
    Move bytes both ways until neither has more; each end's C{after}
    follows its last handshake bytes. What each end got after its
    handshake.
    """
    inbox = {acceptor: dialer.start(), dialer: b""}
    got = {dialer: b"", acceptor: b""}
    sent_after = {dialer: not dialer.pending, acceptor: False}
    if sent_after[dialer]:
        inbox[acceptor] += after  # (a dialler without a secret does not wait)
    while inbox[acceptor] or inbox[dialer]:
        for end, other in ((acceptor, dialer), (dialer, acceptor)):
            if not inbox[end]:
                continue
            out, rest = end.feed(inbox[end])
            inbox[end] = b""
            got[end] += rest
            inbox[other] += out
            if end.done and not sent_after[end]:
                inbox[other] += after
                sent_after[end] = True
    return got[dialer], got[acceptor]


class OpeningTests(SynchronousTestCase):
    """
    Two ends that should agree do, and the first messages pass through.
    """

    def test_without_secrets(self) -> None:
        dialer, acceptor = pair([], [])
        self.assertFalse(dialer.pending)  # it sends its hello at once
        self.assertTrue(acceptor.pending)
        got_d, got_a = run(dialer, acceptor)
        self.assertTrue(dialer.done and acceptor.done)
        self.assertEqual((got_d, got_a), (b"hello", b"hello"))

    def test_same_secret(self) -> None:
        dialer, acceptor = pair([OLD], [OLD])
        self.assertTrue(dialer.pending)
        got_d, got_a = run(dialer, acceptor)
        self.assertTrue(dialer.done and acceptor.done)
        self.assertEqual((got_d, got_a), (b"hello", b"hello"))

    def test_rotation(self) -> None:
        """
        Mid-rotation: one end proves with the new secret and accepts the
        old, the other proves with the old and accepts the new.
        """
        for dialer_secrets, acceptor_secrets in (([NEW, OLD], [OLD, NEW]),
                                                 ([OLD, NEW], [NEW, OLD]),
                                                 ([NEW, OLD], [NEW])):
            dialer, acceptor = pair(dialer_secrets, acceptor_secrets)
            run(dialer, acceptor)
            self.assertTrue(dialer.done and acceptor.done, (dialer_secrets, acceptor_secrets))

    def test_byte_at_a_time(self) -> None:
        dialer, acceptor = pair([OLD], [OLD])

        def bytewise(end: Handshake, data: bytes) -> bytes:
            out = b""
            for i in range(len(data)):
                out += end.feed(data[i:i + 1])[0]
            return out

        preamble = bytewise(acceptor, dialer.start())
        self.assertEqual(len(preamble), PREAMBLE_SIZE)  # no proof before the dialler's
        proof = bytewise(dialer, preamble)
        self.assertEqual(len(proof), 32)
        self.assertFalse(dialer.done)
        answer = bytewise(acceptor, proof)
        self.assertTrue(acceptor.done)
        self.assertEqual(acceptor.proven, OLD)
        _, rest = dialer.feed(answer + b"frames")
        self.assertTrue(dialer.done)
        self.assertEqual(rest, b"frames")


class RefusalTests(SynchronousTestCase):
    """
    Ends that must not talk do not, and say why.
    """

    def test_wrong_secret(self) -> None:
        """
        The dialler proves first; the acceptor refuses its proof, having
        proved nothing itself.
        """
        dialer, acceptor = pair([NEW], [OLD])
        preamble, _ = acceptor.feed(dialer.start())
        self.assertEqual(len(preamble), PREAMBLE_SIZE)
        proof, _ = dialer.feed(preamble)
        with self.assertRaises(HandshakeError) as caught:
            acceptor.feed(proof)
        self.assertEqual(str(caught.exception), "it does not know the cluster secret")
        self.assertEqual(caught.exception.reply, b"")
        self.assertFalse(acceptor.done or dialer.done)

    def test_forged_proof(self) -> None:
        """
        An acceptor reads no message after a dialler's proof that does not
        check out.
        """
        dialer, acceptor = pair([OLD], [OLD])
        acceptor.feed(dialer.start())
        with self.assertRaises(HandshakeError):
            acceptor.feed(b"\0" * 32 + b"a message")
        self.assertFalse(acceptor.done)

    def test_replayed_proof(self) -> None:
        """
        A dialler's proof from one link does not open another: each
        acceptor's nonce is fresh.
        """
        dialer, acceptor = pair([OLD], [OLD])
        first = dialer.start()
        out, _ = acceptor.feed(first)
        proof, _ = dialer.feed(out)
        acceptor.feed(proof)
        self.assertTrue(acceptor.done)
        again = Handshake(False, [OLD], os.urandom(16))
        again.feed(first)
        with self.assertRaises(HandshakeError):
            again.feed(proof)

    def test_reflected_proof(self) -> None:
        """
        A dialler's own proof sent back to it is not an acceptor's proof.
        """
        dialer, acceptor = pair([OLD], [OLD])
        out, _ = acceptor.feed(dialer.start())
        proof, _ = dialer.feed(out)
        with self.assertRaises(HandshakeError):
            dialer.feed(proof)

    def test_secret_against_none(self) -> None:
        """
        One end with a secret, the other without: both refuse, each saying
        which side has it; the acceptor first sends its preamble so the
        dialler can say why too.
        """
        dialer, acceptor = pair([], [OLD])
        with self.assertRaises(HandshakeError) as caught:
            acceptor.feed(dialer.start() + b"a hello it never reads")
        self.assertEqual(str(caught.exception), "it has no cluster secret, this node has one")
        with self.assertRaises(HandshakeError) as other:
            dialer.feed(caught.exception.reply)
        self.assertEqual(str(other.exception), "it has a cluster secret, this node has none")

    def test_other_version(self) -> None:
        dialer, acceptor = pair([], [])
        first = bytearray(dialer.start())
        first[5] += 1
        with self.assertRaises(HandshakeError) as caught:
            acceptor.feed(bytes(first))
        self.assertEqual(str(caught.exception),
                         f"it speaks peer protocol version {PROTOCOL_VERSION + 1}, "
                         f"this node {PROTOCOL_VERSION}")

    def test_not_a_peer(self) -> None:
        acceptor = Handshake(False, [], os.urandom(16))
        with self.assertRaises(HandshakeError) as caught:
            acceptor.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(caught.exception.reply, b"")

    @settings(max_examples=300, deadline=None)
    @given(data=st.binary(max_size=120), secret=st.booleans())
    def test_garbage(self, data: bytes, secret: bool) -> None:
        """
        Whatever arrives, the acceptor either waits, refuses with
        HandshakeError, or (only for a well-formed open preamble) finishes
        without a secret; with a secret, never finishes.
        """
        acceptor = Handshake(False, [OLD] if secret else [], os.urandom(16))
        try:
            acceptor.feed(MAGIC + data)
        except HandshakeError:
            return
        if secret:
            self.assertFalse(acceptor.done)
