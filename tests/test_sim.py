"""
The deterministic simulation (tests/sim.py) as part of the suite: a few
hundred seeds of random faults and workloads, each checked against the
guarantees; and a seed replays the same run.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from .sim import FAULTS, Simulation, Violation, run_seed

#: Seeds run by the suite; `make sim SEEDS=...` runs more.
CI_SEEDS = int(os.environ.get("DHT_SIM_SEEDS", "300"))


class SimulationTests(SynchronousTestCase):
    """
    Random faults never break the guarantees.
    """

    def test_seeds(self) -> None:
        """
        CI_SEEDS seeds pass the checker; every fault kind was on in some run.
        """
        failures = []
        kinds = dict.fromkeys(FAULTS, 0)
        for seed in range(CI_SEEDS):
            try:
                sim = run_seed(seed)
            except Violation as e:
                failures.append(str(e))
                continue
            for kind, on in sim.faults.items():
                kinds[kind] += on
        self.assertEqual(failures, [])
        self.assertTrue(all(kinds.values()), kinds)

    def test_replay(self) -> None:
        """
        The same seed gives the same run, event for event.
        """
        first = run_seed(7)
        second = run_seed(7)
        self.assertEqual(first.trace, second.trace)
        self.assertEqual(first.fingerprint(), second.fingerprint())
        self.assertNotEqual(first.fingerprint(), run_seed(8).fingerprint())

    def test_checker_catches_lies(self) -> None:
        """
        The checker fails a run in which a node answers ok to writes it
        aborted (the reference's flaw).
        """
        from dhtwisted import twopc

        real = twopc._Write.finish

        def lying(self: twopc._Write, outcome: object) -> None:
            if isinstance(outcome, twopc.TransactionFailed):
                outcome = [False] * len(self.writes)
            real(self, outcome)

        twopc._Write.finish = lying  # type: ignore[method-assign]
        self.addCleanup(setattr, twopc._Write, "finish", real)
        caught = 0
        for seed in range(20):
            sim = Simulation(seed)
            sim.run()
            try:
                sim.check()
            except Violation:
                caught += 1
        self.assertGreater(caught, 5)
