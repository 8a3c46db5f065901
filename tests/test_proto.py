"""
The committed protobuf module is what `make proto` makes of proto/dht.proto.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from dhtwisted.twopc import Vote
from dhtwisted.wire import vote_from_pb, vote_to_pb, writes_from_pb, writes_to_pb

_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


class GeneratedCodeTests(SynchronousTestCase):
    """
    dhtwisted/_proto/dht_pb2.py must not go stale.
    """

    def test_regenerating_changes_nothing(self) -> None:
        """
        protoc (grpcio-tools, pinned in setup.py) run on proto/dht.proto
        writes exactly the committed module.
        """
        out = tempfile.mkdtemp()
        result = subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", "-Iproto", f"--python_out={out}",
             "proto/dht.proto"],
            cwd=_ROOT, capture_output=True, timeout=120,
        )
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        with open(os.path.join(out, "dht_pb2.py"), "rb") as f:
            fresh = f.read()
        with open(os.path.join(_ROOT, "dhtwisted", "_proto", "dht_pb2.py"), "rb") as f:
            committed = f.read()
        self.assertEqual(committed, fresh, "dht_pb2.py is stale: run `make proto`")

    def test_messages_round_trip(self) -> None:
        """
        A frame with an envelope survives encoding and decoding.
        """
        from dhtwisted._proto import dht_pb2

        frame = dht_pb2.Frame()
        env = frame.envelopes.add(request_id=7)
        env.prepare.txid = "a:1:2"
        writes = [(b"k", b"\x00v"), (b"gone", None), (b"", b"")]
        writes_to_pb(writes, env.prepare.writes)
        decoded = dht_pb2.Frame.FromString(frame.SerializeToString())
        self.assertEqual(decoded.envelopes[0].WhichOneof("body"), "prepare")
        self.assertEqual(writes_from_pb(decoded.envelopes[0].prepare.writes), writes)

    def test_vote_round_trip(self) -> None:
        """
        A vote, with the writes it left out, survives encoding and decoding.
        """
        from dhtwisted._proto import dht_pb2

        for vote in [Vote(True, max_version=b"v" * 12, existed=(True, False, True),
                          skipped=(1,)),
                     Vote(False, "conflict: key is locked by another write", conflict=True)]:
            pb = dht_pb2.Vote()
            vote_to_pb("a:1:2", vote, pb)
            decoded = dht_pb2.Vote.FromString(pb.SerializeToString())
            self.assertEqual((decoded.txid, vote_from_pb(decoded)), ("a:1:2", vote))

    def test_writes_that_do_not_pair_up(self) -> None:
        """
        Packed writes whose keys and values differ in number, or that
        delete a write that is not there, are refused.
        """
        from dhtwisted._proto import dht_pb2

        for keys, values, deletes in [([b"a", b"b"], [b"1"], []), ([b"a"], [b""], [1])]:
            pb = dht_pb2.Writes(keys=keys, values=values, deletes=deletes)
            self.assertRaises(ValueError, writes_from_pb, pb)
