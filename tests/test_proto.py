"""
The committed protobuf module is what `make proto` makes of proto/dht.proto.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

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
        env.prepare.writes.add(key=b"k", value=b"\x00v")
        decoded = dht_pb2.Frame.FromString(frame.SerializeToString())
        self.assertEqual(decoded.envelopes[0].WhichOneof("body"), "prepare")
        self.assertEqual(decoded.envelopes[0].prepare.writes[0].value, b"\x00v")
