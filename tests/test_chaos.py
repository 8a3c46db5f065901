"""
A short chaos run against 5 real nodes (the full run is `make chaos`).
"""

from __future__ import annotations

import io
from contextlib import redirect_stdout

from twisted.trial.unittest import SynchronousTestCase

from .chaos import Chaos


class ChaosTests(SynchronousTestCase):
    """
    SIGKILL, SIGSTOP and SIGTERM on real nodes lose no acknowledged write.
    """

    def test_short_chaos_run(self) -> None:
        """
        15 seconds of chaos: no acknowledged write lost, no stale read after
        convergence, no node crashing on its own.
        """
        out = io.StringIO()
        with redirect_stdout(out):
            status = Chaos(duration=15, seed=20261123).run()
        report = out.getvalue()
        self.assertEqual(status, 0, report)
        self.assertIn("acknowledged writes lost: 0", report)
        self.assertIn("stale reads after convergence: 0", report)
        self.assertIn("node crashes and errors: 0", report)
