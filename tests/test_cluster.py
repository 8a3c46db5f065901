"""
The cluster in one process, on a fake clock and a fake network: joining,
failure detection, 2PC across nodes, reads and stabilization.
"""

from __future__ import annotations

import dataclasses
from unittest.mock import patch

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from dhtwisted import node as node_module

from .cluster import Cluster, ClusterClient
from .test_resp import resp


class MembershipTests(SynchronousTestCase):
    """
    Gossip membership over the fake network.
    """

    def test_ten_nodes_converge(self) -> None:
        """
        Ten nodes joining through the first all see the same ten live members.
        """
        cluster = Cluster(10)
        cluster.run(30)
        everyone = [f"n{i}" for i in range(10)]
        for node_id, view in cluster.live_views().items():
            self.assertEqual(sorted(view), sorted(everyone), node_id)

    def test_crashed_node_declared_dead_in_time(self) -> None:
        """
        A crashed node is declared dead by every other node within
        fail_after (plus one gossip interval), and not before fail_after
        minus one gossip interval; later it is forgotten.
        """
        cluster = Cluster(4)
        cluster.run(20)
        cluster.net.crash("n2")
        crashed_at = cluster.clock.seconds()
        dead_at: dict[str, float] = {}
        while len(dead_at) < 3 and cluster.clock.seconds() - crashed_at < 60:
            cluster.run(0.5)
            for node in cluster.nodes:
                member = node.membership.get("n2")
                if node.node_id != "n2" and node.node_id not in dead_at and (
                        member is None or member.status == "dead"):
                    dead_at[node.node_id] = cluster.clock.seconds() - crashed_at
        config = cluster.nodes[0].config
        self.assertEqual(len(dead_at), 3)
        for node_id, after in dead_at.items():
            self.assertGreaterEqual(after, config.fail_after - config.gossip_interval, node_id)
            self.assertLessEqual(after, config.fail_after + config.gossip_interval + 1, node_id)
        cluster.run(config.remove_after)
        for node in cluster.nodes:
            if node.node_id != "n2":
                self.assertIsNone(node.membership.get("n2"))

    def test_duplicate_id_refused(self) -> None:
        """
        A newcomer claiming a live member's id or ring position from another
        address is refused and does not join.
        """
        cluster = Cluster(3)
        cluster.run(10)
        errors = []
        from twisted.logger import globalLogPublisher

        def observe(event: dict) -> None:
            if event.get("log_format", "").startswith("refused"):
                errors.append(event["log_format"])

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        # n3 claims n1's ring position, joining through n0
        impostor = cluster.add_node(3, start=False)
        impostor.membership.update_me(tokens=(cluster.nodes[1].config.ring_id,))
        impostor.startService()
        cluster.run(10)
        self.assertNotIn("n3", cluster.live_views()["n0"])
        self.assertEqual([m.node_id for m in impostor.membership.live()], ["n3"])
        self.assertIn("refused a peer from {address}: {why}", errors)
        self.assertIn("refused by {address}: {why}", errors)


class ReplicationTests(SynchronousTestCase):
    """
    Writes and reads across nodes.
    """

    def setUp(self) -> None:
        self.cluster = Cluster(5)
        self.cluster.run(20)

    def test_set_get_any_node(self) -> None:
        """
        A write through one node is on exactly its 3 replicas and readable
        through every node.
        """
        c = self.cluster.client(0)
        self.assertEqual(c.command(b"set hello world"), b"ok\r\n")
        holders = self.cluster.holders(b"hello")
        self.assertEqual(sorted(holders), sorted(self.cluster.nodes[0].replicas_for(b"hello")))
        self.assertEqual(set(holders.values()), {b"world"})
        for i in range(5):
            self.assertEqual(self.cluster.client(i).command(b"get hello"), b"world\r\n")

    def test_mset_spanning_nodes(self) -> None:
        """
        An MSET whose keys live on different nodes is applied on all of
        their replicas.
        """
        keys = [b"k%d" % i for i in range(20)]
        c = self.cluster.client(3)
        line = b"mset " + b" ".join(k + b" v" + k for k in keys)
        self.assertEqual(c.command(line), b"ok\r\n")
        owners = set()
        for key in keys:
            holders = self.cluster.holders(key)
            owners.update(holders)
            self.assertEqual(len(holders), 3)
            self.assertEqual(set(holders.values()), {b"v" + key})
        self.assertEqual(len(owners), 5)

    def test_pipelined_writes_one_transaction(self) -> None:
        """
        Writes a client pipelines in one read answer in order, each on its
        own, and go to the replicas as one transaction.
        """
        c = self.cluster.client(2)
        coordinator = self.cluster.nodes[2].coordinator
        before = coordinator.stats["commits"]
        keys = [b"p%d" % i for i in range(12)]
        c.protocol.dataReceived(b"".join(b"set %s v%s\n" % (k, k) for k in keys)
                                + b"del p0 nothing\nget p1\n")
        self.cluster.run(1)
        self.assertEqual(c.take(), b"ok\r\n" * 12 + b"1\r\n" + b"vp1\r\n")
        # the twelve SETs together; the DEL waits for the SET of p0, then goes alone
        self.assertEqual(coordinator.stats["commits"] - before, 2)
        for key in keys[1:]:
            self.assertEqual(set(self.cluster.holders(key).values()), {b"v" + key})
        self.assertEqual(set(self.cluster.holders(b"p0").values()), {None})

    def test_pipelined_resp_sets_run_together(self) -> None:
        """
        RESP SETs pipelined in one read go to the replicas as one
        transaction and answer one by one; a SET one replica refuses (its
        max_value is smaller) fails alone, and is applied nowhere.
        """
        node = self.cluster.nodes[1]
        c = self.cluster.client(1)
        keys = [b"r%d" % i for i in range(10)]
        refuser = next(n for n in self.cluster.nodes
                       if n.node_id in node.replicas_for(b"big") and n is not node)
        refuser.config = dataclasses.replace(refuser.config, max_value=100)
        before = node.coordinator.stats["commits"]
        sets = [resp(b"SET", k, b"v" + k) for k in keys[:5]]
        sets += [resp(b"SET", b"big", b"x" * 200)]
        sets += [resp(b"SET", k, b"v" + k) for k in keys[5:]]
        c.protocol.dataReceived(b"".join(sets))
        self.cluster.run(2)
        reply = c.take()
        self.assertEqual(reply.split(b"\r\n")[5:6], [b"-ERR write aborted, nothing applied "
                                                    b"(replica %s: value larger than its "
                                                    b"max_value)" % refuser.node_id.encode()])
        self.assertEqual(reply.count(b"+OK\r\n"), 10)
        self.assertTrue(reply.startswith(b"+OK\r\n" * 5), reply)
        self.assertTrue(reply.endswith(b"+OK\r\n" * 5), reply)
        for key in keys:
            self.assertEqual(set(self.cluster.holders(key).values()), {b"v" + key})
        self.assertEqual(self.cluster.holders(b"big"), {})
        # one try of all eleven, then each alone
        self.assertEqual(node.coordinator.stats["commits"] - before, 10)
        c.protocol.dataReceived(b"".join(resp(b"SET", k, b"w") for k in keys))
        self.cluster.run(1)
        self.assertEqual(c.take(), b"+OK\r\n" * 10)
        self.assertEqual(node.coordinator.stats["commits"] - before, 11)

    def test_pipelined_get_sees_pipelined_set(self) -> None:
        """
        A GET pipelined after a SET of its key (in one read or not, RESP
        or text) answers what the SET wrote, on every node; so does MGET.
        """
        for i, node in enumerate(self.cluster.nodes):
            c = self.cluster.client(i)
            keys = [b"s%d-%d" % (i, j) for j in range(6)]
            c.protocol.dataReceived(
                b"".join(resp(b"SET", k, b"1") for k in keys)
                + b"".join(resp(b"GET", k) for k in keys)
                + resp(b"SET", keys[0], b"2") + resp(b"MGET", keys[0], keys[1])
                + resp(b"SET", keys[0], b"3"))
            self.cluster.run(1)
            self.assertEqual(c.take(), b"+OK\r\n" * 6 + b"$1\r\n1\r\n" * 6 + b"+OK\r\n"
                             + b"*2\r\n$1\r\n2\r\n$1\r\n1\r\n+OK\r\n")
            text = self.cluster.client(i)
            text.protocol.dataReceived(b"set t%d a\nget t%d\nset t%d b\nget t%d\n" % ((i,) * 4))
            self.cluster.run(1)
            self.assertEqual(text.take(), b"ok\r\na\r\nok\r\nb\r\n")

    def test_replica_down_write_fails_nothing_applied(self) -> None:
        """
        With a replica of the key crashed (not yet declared dead), the write
        answers ERR and no replica applies it.
        """
        c = self.cluster.client(0)
        self.assertEqual(c.command(b"set k old"), b"ok\r\n")
        victim = [n for n in self.cluster.nodes[0].replicas_for(b"k") if n != "n0"][0]
        self.cluster.net.crash(victim)
        reply = c.command(b"set k new")
        self.assertTrue(reply.startswith(b"ERR write aborted"), reply)
        self.assertEqual(set(self.cluster.holders(b"k").values()), {b"old"})

    def test_dead_replica_replaced(self) -> None:
        """
        Once a crashed node is declared dead, writes go to the new replica
        set and stabilization restores 3 copies of older keys.
        """
        c = self.cluster.client(0)
        for i in range(30):
            self.assertEqual(c.command(b"set key%d val%d" % (i, i)), b"ok\r\n")
        self.cluster.net.crash("n3")
        self.cluster.run(40)
        for i in range(30):
            key = b"key%d" % i
            holders = self.cluster.holders(key)
            self.assertEqual(sorted(holders),
                             sorted(self.cluster.nodes[0].replicas_for(key)), key)
            self.assertEqual(set(holders.values()), {b"val%d" % i})
        self.assertEqual(c.command(b"set after death"), b"ok\r\n")
        self.assertEqual(self.cluster.client(1).command(b"get key7"), b"val7\r\n")

    def test_join_moves_keys(self) -> None:
        """
        After a sixth node joins, every key converges to exactly its 3 new
        owners, and reads find every key throughout.
        """
        c = self.cluster.client(0)
        for i in range(40):
            c.command(b"set key%d val%d" % (i, i))
        self.cluster.n = 6
        self.cluster.add_node(5)
        self.cluster.run(1)
        for i in range(40):
            self.assertEqual(c.command(b"get key%d" % i), b"val%d\r\n" % i)
        self.cluster.run(40)
        for i in range(40):
            key = b"key%d" % i
            holders = self.cluster.holders(key)
            self.assertEqual(sorted(holders),
                             sorted(self.cluster.nodes[0].replicas_for(key)), key)
        moved = sum("n5" in self.cluster.holders(b"key%d" % i) for i in range(40))
        self.assertGreater(moved, 0)


class FullPassTests(SynchronousTestCase):
    """
    The periodic full stabilization pass, the safety net.
    """

    def test_lost_copy_restored_by_full_pass(self) -> None:
        """
        A copy lost behind the protocol's back (nothing changed in the
        membership) comes back with the next full pass, after
        C{full_pass_interval}, not with every stabilization round.
        """
        cluster = Cluster(3, stabilize_interval=1.0, full_pass_interval=20.0)
        cluster.run(25)  # the passes after the joins are over
        self.assertEqual(cluster.client(0).command(b"set k v"), b"ok\r\n")
        victim = cluster.nodes[2]
        victim.store.drop(b"k", victim.store.version_of(b"k"))
        cluster.run(5)
        self.assertNotIn(victim.node_id, cluster.holders(b"k"))
        cluster.run(20)
        self.assertEqual(cluster.holders(b"k")[victim.node_id], b"v")


class TransactionFaultTests(SynchronousTestCase):
    """
    2PC under faults: the coordinator dies, writes conflict.
    """

    def setUp(self) -> None:
        self.cluster = Cluster(5)
        self.cluster.run(20)
        self.key = b"contested"
        self.replicas = self.cluster.nodes[0].replicas_for(self.key)
        # a coordinator that is not a replica of the key
        self.coordinator = next(n for n in self.cluster.nodes if n.node_id not in self.replicas)
        client = ClusterClient(self.cluster, self.coordinator)
        self.assertEqual(client.command(b"set contested before"), b"ok\r\n")

    def participants(self) -> list:
        """
        The replica nodes of the key.
        """
        return [n for n in self.cluster.nodes if n.node_id in self.replicas]

    def crash_coordinator_at_commit(self, deliver_to: int,
                                    data: bytes = b"set contested after\n") -> None:
        """
        Make the coordinator crash once it decided commit, after sending the
        commit to C{deliver_to} participants only; then write (send C{data}).
        """
        coordinator = self.coordinator
        net = self.cluster.net
        real_replica = coordinator.replica
        delivered: list[str] = []

        class CrashingReplica:
            """
            Passes calls on, but crashes the coordinator once it sent the
            commit to C{deliver_to} participants; later commits are lost.
            """

            def __init__(self, node_id: str) -> None:
                self.node_id = node_id
                self.real = real_replica(node_id)

            def __getattr__(self, name: str) -> object:
                return getattr(self.real, name)

            def commit(this, txid, version, writes, answer, skip=()):  # type: ignore[no-untyped-def]
                if coordinator.node_id in net.down:
                    return  # never sent: the coordinator is down
                if len(delivered) < deliver_to:
                    delivered.append(this.node_id)
                    this.real.commit(txid, version, writes, lambda result: None, skip)
                if len(delivered) == deliver_to:
                    net.flush()
                    net.crash(coordinator.node_id)
                    self.crashed_at = self.cluster.clock.seconds()

        coordinator.coordinator._replica = CrashingReplica  # type: ignore[assignment]
        client = ClusterClient(self.cluster, coordinator)
        client.protocol.dataReceived(data)
        self.cluster.run(1)
        self.assertEqual(client.take(), b"")  # the client never heard ok

    def test_coordinator_dies_before_commit(self) -> None:
        """
        Prepared participants whose coordinator died before sending commit
        resolve the transaction by abort within txn_timeout: locks released,
        old value everywhere.
        """
        self.crash_coordinator_at_commit(0)
        self.assertEqual([n.participant.locked_keys for n in self.participants()], [1, 1, 1])
        config = self.coordinator.config
        self.cluster.run(config.txn_timeout - config.rpc_timeout - 1)
        self.assertEqual([n.participant.locked_keys for n in self.participants()], [1, 1, 1])
        self.cluster.run(config.rpc_timeout + 1)
        self.assertEqual([n.participant.locked_keys for n in self.participants()], [0, 0, 0])
        self.assertEqual([n.participant.in_doubt for n in self.participants()], [0, 0, 0])
        self.assertEqual(set(self.cluster.holders(self.key).values()), {b"before"})
        reply = ClusterClient(self.cluster, self.participants()[0]).command(b"set contested x")
        self.assertEqual(reply, b"ok\r\n")

    def test_coordinator_dies_after_one_commit(self) -> None:
        """
        When one participant got the commit before the coordinator died, the
        others learn it from that participant and commit too.
        """
        self.crash_coordinator_at_commit(1)
        # resolution, before anyone declares the coordinator dead (and
        # stabilization could spread the value)
        config = self.coordinator.config
        self.cluster.run(config.txn_timeout - config.rpc_timeout + 1)
        self.assertLess(self.cluster.clock.seconds() - self.crashed_at, config.fail_after)
        self.assertEqual(sum(n.stats["resolved"] for n in self.participants()), 2)
        self.assertEqual(set(self.cluster.holders(self.key).values()), {b"after"})
        self.assertEqual([n.participant.locked_keys for n in self.participants()], [0, 0, 0])
        versions = {n.store.get(self.key).version for n in self.participants()}
        self.assertEqual(len(versions), 1)

    def test_coordinator_dies_after_a_commit_that_left_a_write_out(self) -> None:
        """
        Two pipelined writes go as one transaction; one replica finds one
        key locked by an older write and leaves it out, so the commit
        leaves it out everywhere. The coordinator dies after sending the
        commit to one participant: the others learn from it what was
        committed and what was left out, and apply only the other write,
        though they had staged both.
        """
        other = next(b"other%d" % i for i in range(10_000)
                     if set(self.coordinator.replicas_for(b"other%d" % i)) == set(self.replicas))
        blocker = self.participants()[0]
        blocker.participant.prepare("older", [(self.key, b"x")], [blocker.node_id], 1e9, "z",
                                    priority=b"\x00" * 12)
        self.crash_coordinator_at_commit(
            1, b"set %s after\nset %s after\n" % (other, self.key))
        staged = [n.participant.locked_keys for n in self.participants()]
        config = self.coordinator.config
        self.cluster.run(config.txn_timeout - config.rpc_timeout + 1)
        self.assertLess(self.cluster.clock.seconds() - self.crashed_at, config.fail_after)
        # the participant that got the commit holds the older write's lock
        # alone; the two others staged both writes
        self.assertEqual(sorted(staged), [1, 2, 2])
        self.assertEqual(sum(n.stats["resolved"] for n in self.participants()), 2)
        self.assertEqual(set(self.cluster.holders(other).values()), {b"after"})
        self.assertEqual(set(self.cluster.holders(self.key).values()), {b"before"})
        self.assertEqual([n.participant.locked_keys for n in self.participants()], [1, 0, 0])

    def test_conflicting_writes_never_disagree(self) -> None:
        """
        Pairs of writes to one key started at once through different nodes:
        each answers ok or ERR, and afterwards every replica holds the same
        version, whose value is the last write answered ok.
        """
        nodes = self.cluster.nodes
        for round_ in range(10):
            a = ClusterClient(self.cluster, nodes[round_ % 5])
            b = ClusterClient(self.cluster, nodes[(round_ + 2) % 5])
            a.protocol.dataReceived(b"set contested a%d\n" % round_)
            b.protocol.dataReceived(b"set contested b%d\n" % round_)
            self.cluster.run(2, step=0.01)
            replies = {b"a%d" % round_: a.take(), b"b%d" % round_: b.take()}
            for reply in replies.values():
                self.assertTrue(reply == b"ok\r\n" or reply.startswith(b"ERR"), reply)
            records = {n.store.get(self.key) for n in self.participants()}
            self.assertEqual(len(records), 1, records)
            value = records.pop().value
            if any(r == b"ok\r\n" for r in replies.values()):
                self.assertEqual(replies[value], b"ok\r\n")


class LeaveTests(SynchronousTestCase):
    """
    A node stopping gracefully hands its keys over.
    """

    def test_graceful_leave(self) -> None:
        """
        A node that stops announces it leaves and pushes its keys to their
        new owners before it is gone; every key stays on 3 live replicas.
        """
        cluster = Cluster(5)
        cluster.run(20)
        c = cluster.client(0)
        for i in range(50):
            self.assertEqual(c.command(b"set key%d val%d" % (i, i)), b"ok\r\n")
        leaving = cluster.nodes[2]
        d = leaving.stopService()
        cluster.run(5)
        self.successResultOf(d)
        self.assertEqual(len(leaving.store), 0)
        cluster.net.down.add("n2")
        for node in cluster.nodes:
            if node is not leaving:
                self.assertEqual(node.membership.get("n2").status, "left")
        for i in range(50):
            key = b"key%d" % i
            holders = cluster.holders(key)
            self.assertEqual(len(holders), 3, key)
            self.assertNotIn("n2", holders)
            self.assertEqual(set(holders.values()), {b"val%d" % i})
        self.assertEqual(cluster.client(1).command(b"get key3"), b"val3\r\n")


class StaleReplicaTests(SynchronousTestCase):
    """
    Versions decide, whatever order records arrive in.
    """

    def test_partitioned_replica_does_not_overwrite_newer_value(self) -> None:
        """
        A replica cut off long enough to be declared dead misses a newer
        write; when it comes back and pushes its stale copy, every replica
        keeps the newer value (the reference lost it).
        """
        cluster = Cluster(5)
        cluster.run(20)
        c = cluster.client(0)
        self.assertEqual(c.command(b"set k old"), b"ok\r\n")
        stale = [n for n in cluster.nodes[0].replicas_for(b"k") if n != "n0"][0]
        for other in cluster.nodes:
            if other.node_id != stale:
                cluster.net.cut.add(frozenset((stale, other.node_id)))
        cluster.run(25)
        self.assertNotIn(stale, cluster.live_views()["n0"])
        self.assertEqual(c.command(b"set k new"), b"ok\r\n")
        cluster.net.cut.clear()
        cluster.run(40)
        self.assertIn(stale, cluster.live_views()["n0"])
        holders = cluster.holders(b"k")
        self.assertEqual(sorted(holders), sorted(cluster.nodes[0].replicas_for(b"k")))
        self.assertEqual(set(holders.values()), {b"new"})
        self.assertEqual(cluster.client(3).command(b"get k"), b"new\r\n")

    def test_new_replica_without_data_does_not_hide_keys(self) -> None:
        """
        Right after a node joins, before stabilization gives it any data,
        every key still reads back through every node.
        """
        cluster = Cluster(5, stabilize_interval=3600.0)
        cluster.run(20)
        c = cluster.client(0)
        for i in range(40):
            self.assertEqual(c.command(b"set key%d val%d" % (i, i)), b"ok\r\n")
        cluster.n = 6
        newcomer = cluster.add_node(5)
        cluster.run(20)
        for view in cluster.live_views().values():
            self.assertIn("n5", view)
        self.assertEqual(len(newcomer.store), 0)
        primaries = [i for i in range(40)
                     if cluster.nodes[0].replicas_for(b"key%d" % i)[0] == "n5"]
        self.assertTrue(primaries)
        for node in range(6):
            reader = cluster.client(node)
            for i in range(40):
                self.assertEqual(reader.command(b"get key%d" % i), b"val%d\r\n" % i)


class AbortTests(SynchronousTestCase):
    """
    Writes that cannot commit everywhere commit nowhere, over the network.
    """

    def setUp(self) -> None:
        self.cluster = Cluster(5)
        self.cluster.run(20)
        self.client = self.cluster.client(0)
        self.assertEqual(self.client.command(b"mset a 1 b 2 c 3 d 4 e 5 f 6"), b"ok\r\n")

    def test_abort_on_no_vote(self) -> None:
        """
        A replica holding a lock of another transaction votes no; the MSET
        is tried again for rpc_timeout, then answers ERR, and none of its
        keys changed anywhere.
        """
        replica = next(n for n in self.cluster.nodes
                       if n.node_id in n.replicas_for(b"d") and n.node_id != "n0")
        replica.participant.prepare("someone:1:1", [(b"d", b"x")], [replica.node_id],
                                    self.cluster.clock.seconds() + 1000)
        started = self.cluster.clock.seconds()
        reply = self.client.command(b"mset a 10 b 20 c 30 d 40 e 50 f 60")
        took = self.cluster.clock.seconds() - started
        self.assertTrue(reply.startswith(b"ERR write aborted, nothing applied (conflict"), reply)
        for key, value in zip(b"abcdef", b"123456"):
            self.assertEqual(set(self.cluster.holders(bytes([key])).values()), {bytes([value])})
        rpc_timeout = self.cluster.nodes[0].config.rpc_timeout
        self.assertGreater(self.cluster.nodes[0].coordinator.stats["retries"], 10)
        self.assertTrue(rpc_timeout <= took <= rpc_timeout + 1, took)

    def test_abort_on_prepare_timeout(self) -> None:
        """
        A replica cut off from the coordinator (not yet declared dead) never
        answers prepare: after rpc_timeout the write answers ERR and nothing
        is applied; the cut-off replica resolves its prepared transaction by
        abort once the link heals.
        """
        victim = next(n for n in self.cluster.nodes[0].replicas_for(b"e") if n != "n0")
        self.cluster.net.cut.add(frozenset(("n0", victim)))
        # the link exists: bytes are held back, as with a hung peer
        reply = self.client.command(b"mset a 10 e 50", within=10)
        self.assertTrue(reply.startswith(b"ERR write aborted"), reply)
        self.assertIn(b"did not answer", reply)
        for key, value in [(b"a", b"1"), (b"e", b"5")]:
            self.assertEqual(set(self.cluster.holders(key).values()), {value})
        self.cluster.net.cut.clear()
        self.cluster.run(self.cluster.nodes[0].config.txn_timeout)
        for node in self.cluster.nodes:
            self.assertEqual(node.participant.locked_keys, 0, node.node_id)
        self.assertEqual(self.client.command(b"set e 500"), b"ok\r\n")


def _cut(cluster: Cluster, side_a: list, side_b: list, reset: bool = True) -> None:
    """
    Partition C{side_a} from C{side_b}; with C{reset}, their open links
    are reset as a real network failure would.
    """
    for a in side_a:
        for b in side_b:
            cluster.net.cut.add(frozenset((a, b)))
    if reset:
        for a, b, pump in list(cluster.net.pumps):
            if frozenset((a, b)) in cluster.net.cut:
                for io in (pump.clientIO, pump.serverIO):
                    if not io.disconnected:
                        io.disconnected = True
                        io.reportDisconnect()


class ReviewRegressionTests(SynchronousTestCase):
    """
    Scenarios found by reading the protocol against the guarantees.
    """

    def test_handoff_keeps_newer_write(self) -> None:
        """
        A node handing a key to a new owner does not drop a newer version
        committed on it while the push was in flight.
        """
        from twisted.internet.task import deferLater

        from dhtwisted.ring import key_position

        cluster = Cluster(3, replicas=1)
        cluster.run(20)
        key = b"k1"
        self.assertEqual(cluster.client(0).command(b"set k1 v1"), b"ok\r\n")
        old_owner = next(n for n in cluster.nodes if n.node_id in cluster.holders(key))
        old_owner._loops[2][0].stop()  # passes run only when the test says
        newcomer = cluster.add_node(3, start=False, seed=int(old_owner.node_id[1:]))
        newcomer.membership.update_me(tokens=(key_position(key, 65536),))
        newcomer.startService()
        cluster.net.flush()
        cluster.clock.advance(0.01)
        cluster.net.flush()
        push = old_owner._push
        old_owner._push = lambda o, r: push(o, r).addCallback(  # type: ignore[method-assign]
            lambda stored: deferLater(cluster.clock, 0.5, lambda: stored))
        coordinator = next(n for n in cluster.nodes if n.membership.get("n3") is None)
        d = Deferred.fromCoroutine(old_owner._stabilize_pass(old_owner.membership.version))
        # a coordinator that has not heard of the newcomer writes to the old owner
        reply = ClusterClient(cluster, coordinator).command(b"set k1 v2", within=0.3)
        self.assertEqual(reply, b"ok\r\n")
        cluster.run(1)
        self.successResultOf(d)
        self.assertEqual(old_owner.store.get(key).value, b"v2")
        old_owner._loops[2][0].start(5.0)
        cluster.run(60)
        self.assertEqual(cluster.holders(key), {"n3": b"v2"})
        self.assertEqual(cluster.client(2).command(b"get k1"), b"v2\r\n")

    def test_long_partition_heals(self) -> None:
        """
        After a partition longer than remove_after (both sides forget each
        other), the cluster becomes one again and data written on one side
        reads on the other.
        """
        cluster = Cluster(5)
        cluster.run(20)
        _cut(cluster, ["n0", "n1"], ["n2", "n3", "n4"])
        cluster.run(45)
        self.assertEqual(sorted(cluster.live_views()["n0"]), ["n0", "n1"])
        cluster.net.cut.clear()
        cluster.run(120)
        everyone = ["n0", "n1", "n2", "n3", "n4"]
        for view in cluster.live_views().values():
            self.assertEqual(sorted(view), everyone)
        self.assertEqual(cluster.client(0).command(b"set a 1"), b"ok\r\n")
        self.assertEqual(cluster.client(4).command(b"get a"), b"1\r\n")

    def test_isolated_node_finds_the_others_without_its_seed(self) -> None:
        """
        A node cut off from every live node long enough to forget them, its
        seed gone for good, finds them again by itself once the partition
        heals (even if the others never probe it).
        """
        cluster = Cluster(4)
        cluster.run(20)
        cluster.net.crash("n0")  # the seed of the others
        _cut(cluster, ["n3"], ["n1", "n2"])
        cluster.run(60)
        self.assertEqual(cluster.live_views()["n3"], ["n3"])
        cluster.net.cut.clear()
        with patch.object(node_module, "PROBE_CHANCE", 0.0):
            cluster.run(15)
        for node in ("n1", "n2", "n3"):
            self.assertEqual(sorted(cluster.live_views()[node]), ["n1", "n2", "n3"])

    def test_big_values_move_without_breaking_links(self) -> None:
        """
        Stabilization of 20 values of nearly 1 MiB after a join sends them in
        messages under max_frame: no link closes and every key ends on
        exactly its owners.
        """
        from twisted.logger import globalLogPublisher

        closures = []

        def observe(event: dict) -> None:
            if "max_frame" in event.get("log_format", ""):
                closures.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        cluster = Cluster(4, start=False)
        for node in cluster.nodes[:3]:
            node.startService()
        cluster.run(20)
        c = cluster.client(0)
        big = b"x" * (1024 * 1024 - 10)
        for i in range(20):
            self.assertEqual(c.command(b"set big%d " % i + big), b"ok\r\n")
        cluster.nodes[3].startService()
        cluster.run(60)
        self.assertEqual(closures, [])
        for i in range(20):
            key = b"big%d" % i
            self.assertEqual(sorted(cluster.holders(key)),
                             sorted(cluster.nodes[0].replicas_for(key)), key)
        self.assertEqual(cluster.client(1).command(b"set small v"), b"ok\r\n")

    def test_write_too_large_for_one_message(self) -> None:
        """
        A write whose keys and values exceed half a frame is refused with
        ERR before any replica sees it.
        """
        cluster = Cluster(3, max_frame=4 * 1024 * 1024)
        cluster.run(10)
        big = b"y" * (1024 * 1024)
        line = b"mset " + b" ".join(b"k%d %s" % (i, big) for i in range(3))
        reply = cluster.client(0).command(line)
        self.assertTrue(reply.startswith(b"ERR write too large"), reply)

    def test_missing_from_minority_is_an_error(self) -> None:
        """
        When only a new, still empty replica answers and the replicas with
        the key time out, GET answers ERR, not (nil).
        """
        from dhtwisted.ring import key_position

        cluster = Cluster(5, start=False)
        for node in cluster.nodes[:4]:
            node.startService()
        cluster.run(20)
        key = b"k1"
        self.assertEqual(cluster.client(0).command(b"set k1 v1"), b"ok\r\n")
        newcomer = cluster.nodes[4]
        newcomer.membership.update_me(tokens=(key_position(key, 65536),))
        for holder in cluster.holders(key):
            cluster.net.cut.add(frozenset((holder, "n4")))  # nobody can push to it
        newcomer.startService()
        cluster.run(15)
        owners = cluster.nodes[0].replicas_for(key)
        self.assertEqual(owners[0], "n4")
        reader = next(n for n in cluster.nodes
                      if n.node_id not in owners and n.node_id != "n4")
        for owner in owners[1:]:
            cluster.net.cut.add(frozenset((reader.node_id, owner)))
        reply = ClusterClient(cluster, reader).command(b"get k1")
        self.assertTrue(reply.startswith(b"ERR key not found on the replicas that answered"),
                        reply)
