# -*- test-case-name: tests.test_cluster -*-
"""
A dhtwisted node: builds its parts from a L{NodeConfig} and an injected
reactor, serves clients and peers on its one port, and runs the cluster's
background work.

Background work, each a LoopingCall on the node's clock:
 - heartbeat: increase this node's heartbeat, age the member table,
   resolve transactions prepared here that heard no decision in time;
 - gossip: exchange the member table with C{gossip_fanout} random peers;
 - stabilization: push the records this node holds to the nodes that should
   hold them, and drop those it no longer owns once the owners have them.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import random
import resource
import sys
from operator import itemgetter
from typing import Any, Callable, Iterator, Optional, Sequence, Union

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    TCP6ClientEndpoint,
    TCP6ServerEndpoint,
    serverFromString,
    wrapClientTLS,
)
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import logs
from .logs import OBSERVER, Refusals
from . import __version__
from .allocator import current_allocator
from .commands import Commands
from .config import Address, NodeConfig, parse_address
from .interfaces import IReplica
from .membership import LEFT, Member, Membership, Refused
from .peer import Connect, PeerError, PeerFactory, PeerPool, PeerProtocol, PeerUnavailable
from .replica import RemoteReplica
from .ring import Ring, node_tokens
from .security import SecretFile, is_loopback
from .tls import TLSSettings
from .server import NodeFactory, NodeProtocol
from .web import status_site
from .status import (
    RateMeter,
    cluster_status,
    human_size,
    key_status,
    ring_agreed,
    ring_status,
)
from .store import Record, Store
from .twopc import (
    COMMITTED,
    PENDING,
    Coordinator,
    LocalReplica,
    Outcome,
    Participant,
    TransactionFailed,
    Vote,
    Write,
)
from .version import NO_VERSION, VERSION_SIZE, HybridClock, node_tag
from .wire import (
    Envelope,
    TxnStatus,
    member_from_pb,
    member_to_pb,
    record_from_pb,
    record_to_pb,
    state_from_pb,
    state_to_pb,
    vote_to_pb,
    writes_from_pb,
)

__all__ = ["DHTNode"]

_KEY = itemgetter(0)
_VALUE = itemgetter(1)

log = Logger(observer=OBSERVER)


#: Records per push message, and per slice of a stabilization pass.
PUSH_BATCH = 500
#: How many times a write that met a lock conflict is tried again (within
#: rpc_timeout of its start).
RETRIES = 100
#: The chance, each gossip round, of also probing a seed or a forgotten member.
PROBE_CHANCE = 0.25



class DHTNode(MultiService):
    """
    One node of the cluster.

    :param config: its settings.
    :param reactor: the reactor it listens, dials and keeps time with.
    :param connect: dials a peer's C{host:port} with a factory (the default
        uses TCP); tests pass a fake network's.
    :param rng: randomness for gossip targets and retries.
    :param shutdown: stops the process when a client asks the node to leave
        (C{DHT LEAVE}); the reactor's C{stop} if not given.
    """

    def __init__(self, config: NodeConfig, reactor: Any, connect: Optional[Connect] = None,
                 rng: Optional[random.Random] = None,
                 shutdown: Optional[Callable[[], None]] = None) -> None:
        super().__init__()
        logs.configure(config.log_level)
        # how a node asked to leave stops its process (twistd then stops
        # the service: it hands its keys over first)
        self._shutdown = shutdown or getattr(reactor, "stop", None)
        self._leaving = False
        self.config = config
        self.reactor = reactor
        self.node_id = config.node_id
        self.rng = rng or random.Random()
        now = reactor.seconds()
        self.started_at = now
        #: what allocates this process's objects (it cannot change once started)
        self.allocator = current_allocator()
        self.store = Store()
        self.clock = HybridClock(reactor.seconds, node_tag(config.node_id))
        keep = 4 * config.txn_timeout + config.remove_after
        self.participant = Participant(self.store, self.clock, reactor.seconds, keep,
                                       lock_wait=config.rpc_timeout / 2)
        self.tokens = node_tokens(config.node_id, config.ring_id, config.vnodes, config.ring_size)
        self.membership = Membership(
            Member(config.node_id, str(config.peer_address), tuple(self.tokens),
                   generation=int(now * 1000)),
            now, config.fail_after, config.remove_after,
        )
        self._ring: Optional[Ring] = None
        self._ring_version = -1
        self._state_at = (-1, 0)  # membership (version, peak) when _state was found
        self._state: tuple[Optional[str], bool] = (None, False)
        self._local = LocalReplica(self.node_id, self.participant, self._prepare_deadline)
        self._remote: dict[str, RemoteReplica] = {}
        self.coordinator = Coordinator(
            self.node_id, self.clock, reactor, self.replicas_for, self.replica,
            rpc_timeout=config.rpc_timeout, rng=self.rng, is_member=self._is_member, keep=keep,
            local=self.participant, retries=RETRIES, retry_for=config.rpc_timeout,
            group_bytes=config.max_message // 2, alone=self.alone,
            replicas_of=lambda keys: self.ring.replica_sets(keys, config.replicas),
            refusal=lambda: self._write_state()[0],
        )
        self.commands = Commands(self, config.max_key, config.max_value,
                                 max_write=config.max_message)
        self.tls = TLSSettings(config.tls_ca, config.tls_cert, config.tls_key) if config.tls \
            else None
        refusals = Refusals()  # one per node: its port's and its peer links' refusals
        self.factory = NodeFactory(
            self.commands,
            max_line=config.max_line,
            max_clients=config.max_clients,
            max_pipeline=config.max_pipeline,
            peer_connected=self._peer_connected,
            clock=reactor,
            password=config.requirepass.encode("utf-8"),
            tls=self.tls.server_options() if self.tls else None,
            refusals=refusals,
        )
        self._secret_file = (SecretFile(config.cluster_secret_file)
                             if config.cluster_secret_file else None)
        secrets = ([config.cluster_secret.encode("utf-8")] if config.cluster_secret
                   else self._secret_file.read() if self._secret_file else [])
        self.peer_factory = PeerFactory(self, reactor, config.rpc_timeout, config.max_frame,
                                        secrets=secrets, refusals=refusals)
        self.pool = PeerPool(self.peer_factory, connect or self._tcp_connect, reactor,
                             backoff=min(0.5, config.gossip_interval),
                             max_backoff=config.gossip_interval)
        self._loops: list[tuple[LoopingCall, float]] = []
        for work, interval in [(self._heartbeat, config.heartbeat_interval),
                               (self._gossip, config.gossip_interval),
                               (self._stabilize, config.stabilize_interval)]:
            loop = LoopingCall(work)
            loop.clock = reactor
            self._loops.append((loop, interval))
        self._resolving: set[str] = set()
        # this node holds records it does not own: the next round hands them over
        self._holds_foreign = False
        self._full_pass_at = reactor.seconds()
        self._stable_version = -1
        self.stats = {"gossip_rounds": 0, "pushed": 0, "handed_off": 0, "resolved": 0}
        self.backlog = 0  # records the running stabilization pass has yet to look at
        self._secrets_broken = False  # the secret file is unusable (logged once)
        self._rate = RateMeter()
        self._view = (-1, 0)  # (membership version, its ring digest)
        self.port: Optional[IListeningPort] = None
        self.address: Optional[Address] = None
        self.web_port: Optional[IListeningPort] = None  # [metrics] listen

    # -- service

    def privilegedStartService(self) -> None:
        """
        Listen on the configured address; raise at once if that fails, so
        that twistd stops with the reason.
        """
        listen = self.config.listen
        endpoint_type = TCP6ServerEndpoint if ":" in listen.host else TCP4ServerEndpoint
        endpoint = endpoint_type(self.reactor, listen.port, interface=listen.host)
        self.port = _listen_now(endpoint, self.factory, str(listen))
        self.address = Address(listen.host, self.port.getHost().port)
        if self.config.advertise is None:
            self.membership.update_me(address=str(self.address))
        if self.config.metrics_listen:
            try:
                self.web_port = _listen_now(
                    serverFromString(self.reactor, self.config.metrics_listen),
                    status_site(self), self.config.metrics_listen)
            except BaseException:
                self.port.stopListening()
                self.port = None
                raise
        super().privilegedStartService()

    def startService(self) -> None:
        """
        Start serving, join the cluster and start the background work.
        """
        if self.port is None:
            self.privilegedStartService()
        super().startService()
        logs.configure(self.config.log_level, self.node_id)
        log.info(
            "dht node {node} listening on {address}",
            node=self.node_id,
            address=str(self.address),
        )
        if not is_loopback(self.config.listen.host) and not self.config.requirepass:
            log.warn("node {node} listens on {host}, beyond this machine, with no "
                     "requirepass: any client that reaches it may read and change every key",
                     node=self.node_id, host=self.config.listen.host)
        if self.web_port is not None:
            where = self.web_port.getHost()
            host = getattr(where, "host", None)
            url = (f"http://{'[' + host + ']' if ':' in host else host}:{where.port}/"
                   if host is not None else f"unix:{getattr(where, 'name', '?')}")
            log.info("node {node}: status page and /metrics at {url}",
                     node=self.node_id, url=url)
        for loop, interval in self._loops:
            loop.start(interval, now=True).addErrback(
                lambda f: log.failure("background work stopped", f)
            )

    def stopService(self) -> Deferred[None]:
        """
        Leave the cluster gracefully (announce it, hand the keys over, within
        C{leave_timeout}), then close peer links and stop listening.
        """
        for loop, _ in self._loops:
            if loop.running:
                loop.stop()
        if self.membership.peers():
            d = Deferred.fromCoroutine(self._leave())
            d.addTimeout(self.config.leave_timeout, self.reactor)
            d.addErrback(lambda f: log.warn("left without handing every key over: {why}",
                                            why=f.getErrorMessage()))
        else:
            d = succeed(None)
        return d.addCallback(lambda _: self._stop())

    async def _leave(self) -> None:
        """
        Tell every peer this node is leaving, then push its keys to their
        owners (the ring no longer includes this node) until all are handed
        over.
        """
        peers = self.membership.peers()
        self.membership.leave(self.reactor.seconds())
        log.info("node {node} leaving: handing {count} records to {peers} peers",
                 node=self.node_id, count=len(self.store), peers=len(peers))
        table = self._table()
        await DeferredList([self._gossip_with(m.node_id, m.address, table) for m in peers],
                           consumeErrors=True)
        while len(self.store):
            if not self.membership.peers():
                # the others left too (a whole cluster stopping): nobody to take them
                log.warn("node {node} left with {count} records: no live member "
                         "remains to take them", node=self.node_id, count=len(self.store))
                return
            before = len(self.store)
            await self._stabilize_pass(self.membership.version)
            if len(self.store) == before:
                await deferLater(self.reactor, min(1.0, self.config.rpc_timeout))
        log.info("node {node} handed all its keys over", node=self.node_id)

    def _stop(self) -> Deferred[None]:
        self.coordinator.stop()
        self.pool.close()
        port, self.port = self.port, None
        web_port, self.web_port = self.web_port, None
        d = maybeDeferred(super().stopService)
        for listening in (port, web_port):
            if listening is not None:
                d.addCallback(lambda _, listening=listening: listening.stopListening())
        return d

    # -- the ring

    @property
    def ring(self) -> Ring:
        """
        The ring of the live members, rebuilt when membership changes.
        """
        if self._ring is None or self._ring_version != self.membership.version:
            self._ring_version = self.membership.version
            self._ring = Ring(self.membership.ring_tokens(), self.config.ring_size)
        return self._ring

    def replicas_for(self, key: bytes) -> list[str]:
        """
        The ids of C{key}'s replicas, in preference order.
        """
        return self.ring.preference_list(key, self.config.replicas)

    def _is_member(self, node_id: str) -> bool:
        member = self.membership.get(node_id)
        return member is not None and member.status != LEFT

    def replica(self, node_id: str) -> IReplica:
        """
        The node C{node_id} as a replica.
        """
        if node_id == self.node_id:
            return self._local
        remote = self._remote.get(node_id)
        if remote is None:
            remote = self._remote[node_id] = RemoteReplica(
                self.node_id, lambda: self._ready_link(node_id), lambda: self._link(node_id))
        return remote

    def _ready_link(self, node_id: str) -> Optional[PeerProtocol]:
        link = self.pool.links.get(node_id)
        if link is not None and link.connected:
            return link
        return None

    def _link(self, node_id: str) -> Deferred[PeerProtocol]:
        member = self.membership.get(node_id)
        if member is None:
            return fail(PeerUnavailable(f"unknown node {node_id}"))
        return self.pool.get(node_id, member.address)

    def _prepare_deadline(self) -> float:
        # resolution starts early enough to end within txn_timeout
        return self.reactor.seconds() + self.config.txn_timeout - self.config.rpc_timeout

    # -- commands

    def read(self, keys: Sequence[bytes], done: Callable[[Any], None]) -> Any:
        """
        See L{dhtwisted.commands.NodeAPI.read}.
        """
        return self.coordinator.read(keys, done, self.config.read_quorum)

    def write(self, writes: Sequence[tuple[bytes, Optional[bytes]]],
              done: Callable[[Any], None]) -> Any:
        """
        See L{dhtwisted.commands.NodeAPI.write}.

        A node that sees fewer live members than a write needs (C{replicas},
        or the whole cluster if it is smaller) refuses writes: it may be cut
        off from the rest, which goes on writing, and its writes would be
        lost or win over newer ones when the partition heals.
        """
        refusal = self._write_state()[0]
        if refusal is not None:
            raise TransactionFailed(refusal)
        return self.coordinator.write(writes, done)

    def _write_state(self) -> tuple[Optional[str], bool]:
        """
        Why this node refuses writes now (see L{write}), C{None} if it takes
        them; and whether it alone holds every key. (Asked for every write
        and every read of a client: kept until the membership changes.)
        """
        membership = self.membership
        if self._state_at != (membership.version, membership.peak):
            self._state_at = (membership.version, membership.peak)
            refusal = self._refusal()
            self._state = (refusal, refusal is None and self.ring.nodes == {self.node_id})
        return self._state

    def _refusal(self) -> Optional[str]:
        """
        Why this node refuses writes now; C{None} if it takes them.
        """
        live = len(self.ring)
        membership = self.membership
        if live < self.config.replicas:
            needed = min(self.config.replicas, membership.peak)
            if live < needed:
                return (f"only {live} live members in view, a write needs {needed}; "
                        "nothing applied")
        if membership.peak == 1 and self.config.seeds:
            return "not part of a cluster yet: no seed answered; nothing applied"
        return None

    def alone(self) -> bool:
        """
        See L{dhtwisted.commands.NodeAPI.alone}.
        """
        return self._write_state()[1]

    def write_each(self, writes: Sequence[tuple[bytes, Optional[bytes]]]) -> int:
        """
        See L{dhtwisted.commands.NodeAPI.write_each}.
        """
        if not self.alone():
            return 0
        return self.coordinator.write_each(writes)

    def write_run(self, writes: Sequence[tuple[bytes, bytes]],
                  done: Callable[[list[Any]], None]) -> tuple[int, Any]:
        """
        See L{dhtwisted.commands.NodeAPI.write_run}.
        """
        if self._write_state()[0] is not None:
            return 0, None  # each write says why it is refused
        return self.coordinator.write_run(writes, done)

    def read_each(self, keys: Sequence[bytes]) -> list[Optional[bytes]]:
        """
        See L{dhtwisted.commands.NodeAPI.read_each}.
        """
        if self.config.read_quorum != 1:
            return []
        return self.coordinator.read_here(keys)

    def hold(self) -> None:
        """
        See L{dhtwisted.commands.NodeAPI.hold}.
        """
        self.coordinator.hold()

    def release(self) -> None:
        """
        See L{dhtwisted.commands.NodeAPI.release}.
        """
        self.coordinator.release()

    # -- peers (PeerHandler)

    def me(self) -> Member:
        """
        This node's member entry.
        """
        return self.membership.me

    def _tcp_connect(self, address: str, factory: PeerFactory) -> Deferred[PeerProtocol]:
        where = parse_address(address)
        endpoint_type = TCP6ClientEndpoint if ":" in where.host else TCP4ClientEndpoint
        endpoint = endpoint_type(self.reactor, where.host, where.port,
                                 timeout=max(1, int(self.config.rpc_timeout)))
        if self.tls is not None:
            endpoint = wrapClientTLS(self.tls.client_options(), endpoint)
        return endpoint.connect(factory)

    def _peer_connected(self, proto: NodeProtocol, data: bytes) -> Protocol:
        link = self.peer_factory.accepted()
        link.makeConnection(proto.transport)
        link.dataReceived(data)
        return link

    def hello(self, link: PeerProtocol, member: Member) -> list[Member]:
        """
        A peer introduced itself: refuse it if it claims another member's id
        or ring position, else learn of it and welcome it.
        """
        if member.node_id == self.node_id and member.generation != self.me().generation:
            raise Refused(f"node id {member.node_id} is this node's id, at {self.me().address}")
        if self.tls is not None:
            why = self.tls.refusal(link.transport, member.node_id)
            if why is not None:
                raise Refused(why)
        self.membership.check_join(member)
        self._merge([member])
        self.pool.register(link)
        return self.membership.members()

    def welcome(self, link: PeerProtocol, member: Member, members: list[Member]) -> None:
        """
        A peer this node dialled welcomed it.
        """
        if self.tls is not None:
            why = self.tls.refusal(link.transport, member.node_id)
            if why is not None:
                raise PeerError(why)
        if member.node_id == self.node_id:
            link.transport.loseConnection()  # dialled itself (it is its own seed)
            return
        self._merge([member] + members)
        self.pool.register(link)

    def link_lost(self, link: PeerProtocol) -> None:
        """
        A peer link closed.
        """
        self.pool.lost(link)

    def handle(self, link: PeerProtocol, request: Envelope) -> Union[Envelope, Deferred]:
        """
        Answer a peer's request.
        """
        kind = request.WhichOneof("body")
        reply = Envelope()
        if kind == "gossip":
            self._merge([member_from_pb(m) for m in request.gossip.members])
            reply = self._table()
        elif kind == "get":
            # at most half a frame of values: the caller asks again for the rest
            records = reply.get_reply.records
            budget = self.config.max_message
            for key in request.get.keys:
                record = self.store.get(key)
                budget -= _record_cost(key, record)
                if budget < 0 and len(records):
                    break
                record_to_pb(key, record, records.add())
        elif kind == "prepare":
            p = request.prepare
            # (writes that do not pair up raise ValueError: the link answers
            # an error, see PeerProtocol._handle)
            writes = writes_from_pb(p.writes)
            refusal = self._check_writes(writes)
            if refusal:
                vote_to_pb(p.txid, Vote(False, refusal), reply.vote)
                return reply
            waiting: Deferred[Vote] = Deferred()
            vote = self.participant.prepare(
                p.txid, writes, list(p.participants), self._prepare_deadline(),
                p.coordinator, p.priority, waiting.callback, p.partial,
            )
            if vote is None:  # it waits for a lock: answer when it has one
                return waiting.addCallback(lambda v: vote_to_pb(p.txid, v, reply.vote)
                                           ).addCallback(lambda _: reply)
            vote_to_pb(p.txid, vote, reply.vote)
        elif kind == "commit":
            c = request.commit
            if len(c.version) != VERSION_SIZE:
                reply.error.reason = "commit without a valid version"
                return reply
            writes = writes_from_pb(c.writes) if c.HasField("writes") else None
            done = self.participant.commit(c.txid, c.version, writes, tuple(c.skip))
            reply.txn_status.txid = c.txid
            reply.txn_status.state = TxnStatus.COMMITTED if done else TxnStatus.UNKNOWN
        elif kind == "abort":
            self.participant.abort(request.abort.txid)
            reply.ack.SetInParent()
        elif kind == "txn_query":
            txid = request.txn_query.txid
            if txid.startswith(self.node_id + ":"):
                outcome = self.coordinator.query(txid)
            else:
                outcome = self.participant.status(txid)
            reply.txn_status.txid = txid
            reply.txn_status.state = state_to_pb(outcome.state)
            reply.txn_status.version = outcome.version
            reply.txn_status.skip.extend(outcome.skip)
        elif kind == "push":
            stored = reply.push_ack.stored
            for r in request.push.records:
                record = record_from_pb(r)
                if len(record.version) != VERSION_SIZE:
                    continue
                self.clock.observe(record.version)
                if self.store.apply(r.key, record.version, record.value) and (
                        self.node_id not in self.replicas_for(r.key)):
                    self._holds_foreign = True
                if self.store.version_of(r.key) >= record.version:
                    stored.append(r.key)
        elif kind == "ping":
            reply.pong.SetInParent()
        else:
            reply.error.reason = f"unknown request {kind}"
        return reply

    def _check_writes(self, writes: list[Write]) -> str:
        """
        Why this replica refuses C{writes} (keys or values over its limits),
        or C{""}.
        """
        if max(map(len, map(_KEY, writes)), default=0) > self.config.max_key:
            return f"replica {self.node_id}: key longer than its max_key"
        if max(map(len, filter(None, map(_VALUE, writes))), default=0) > self.config.max_value:
            return f"replica {self.node_id}: value larger than its max_value"
        return ""

    def _merge(self, members: list[Member]) -> None:
        changes = self.membership.merge(members, self.reactor.seconds())
        self._log_changes(changes)

    def _log_changes(self, changes: list[tuple[str, str, str]]) -> None:
        for node_id, old, new in changes:
            if not old:
                member = self.membership.get(node_id)
                log.info("member {peer} joined at {address}", peer=node_id,
                         address=member.address if member else "?", node=self.node_id)
            elif not new:
                log.info("member {peer} forgotten (was {old})", peer=node_id, old=old,
                         node=self.node_id)
            else:
                log.info("member {peer} is {new} (was {old})", peer=node_id, new=new, old=old,
                         node=self.node_id)

    # -- background work

    def _heartbeat(self) -> None:
        now = self.reactor.seconds()
        try:
            self._reload_secrets()
            self.membership.beat(now, **self._load(now))
            self._log_changes(self.membership.check(now))
            self.participant.expire_waiting(now)
            self.participant.prune(now)
            for txid, coordinator, participants in self.participant.overdue(now):
                if txid not in self._resolving:
                    self._resolving.add(txid)
                    Deferred.fromCoroutine(
                        self._resolve(txid, coordinator, participants)
                    ).addErrback(lambda f: log.failure("resolving a transaction failed", f))
            self.coordinator.prune()
        except Exception:
            log.failure("heartbeat failed")

    def _reload_secrets(self) -> None:
        """
        Take the secret file's secrets again if it changed: new peer links
        prove and accept them (the open ones stay open).
        """
        secret_file = self._secret_file
        if secret_file is None:
            return
        try:
            secrets = secret_file.reload()
        except ValueError as e:
            if not self._secrets_broken:
                log.warn("kept the cluster secrets: {why}", why=str(e), node=self.node_id)
                self._secrets_broken = True
            return
        self._secrets_broken = False
        if secrets is not None and secrets != self.peer_factory.secrets:
            self.peer_factory.secrets = secrets
            log.info("cluster secrets read again from {path}: {count} accepted",
                     path=secret_file.path, count=len(secrets), node=self.node_id)

    def _load(self, now: float) -> dict[str, Any]:
        """
        What this node says of itself with its heartbeat.
        """
        version = self.membership.version
        if self._view[0] != version:
            self._view = (version, self.membership.ring_digest())
        return {
            "keys": self.store.live_keys,
            "memory": resident_memory(),
            "rate": self._rate.update(now, sum(self.commands.calls.values())),
            "view": self._view[1],
        }

    async def _resolve(self, txid: str, coordinator: str, participants: list[str]) -> None:
        """
        Decide a transaction prepared here whose decision never came: commit
        if the coordinator or any participant says it committed, otherwise
        abort (the coordinator cannot have answered ok: that needs every
        participant to have committed).
        """
        try:
            others = sorted({coordinator, *participants} - {self.node_id})
            asks = [self._ask(node, txid) for node in others]
            answers = [self.coordinator.query(txid)] if coordinator == self.node_id else []
            for ok, result in await DeferredList(asks, consumeErrors=True):
                if ok:
                    answers.append(result)
            committed = [answer for answer in answers if answer.state == COMMITTED]
            if committed:
                # (with the keys its commit left out: they were not decided)
                self.participant.commit(txid, committed[0].version, skip=committed[0].skip)
                outcome = "commit"
            else:
                self.participant.abort(txid)
                outcome = "abort"
            self.stats["resolved"] += 1
            log.info("resolved transaction {txid} without its coordinator: {outcome}",
                     txid=txid, outcome=outcome)
        finally:
            self._resolving.discard(txid)

    def _ask(self, node_id: str, txid: str) -> Deferred[Outcome]:
        env = Envelope()
        env.txn_query.txid = txid

        def status(reply: Envelope) -> Outcome:
            s = reply.txn_status
            return Outcome(state_from_pb(s.state), s.version, tuple(s.skip))

        return (
            self._link(node_id)
            .addCallback(lambda link: link.call(env))
            .addCallback(status)
        )

    def _gossip(self) -> Deferred[Any]:
        """
        One gossip round: send the member table to a few random live peers
        (and one member thought dead, to notice its return), or to the seeds
        while no peer is known; merge what they answer.
        """
        self.stats["gossip_rounds"] += 1
        try:
            peers = self.membership.peers()
            targets: list[tuple[Optional[str], str]] = [
                (m.node_id, m.address)
                for m in self.rng.sample(peers, min(self.config.gossip_fanout, len(peers)))
            ]
            gone = [m for m in self.membership.members()
                    if not m.live and m.status != LEFT and m.node_id != self.node_id]
            if gone:
                m = self.rng.choice(gone)
                targets.append((m.node_id, m.address))
            mine = self.me().address
            if not peers:
                # alone: every seed, and every member forgotten since (after
                # a long partition the seeds may be gone, the others not)
                addresses = [str(seed) for seed in self.config.seeds]
                addresses += self.membership.forgotten_addresses()
                targets += [(None, a) for a in dict.fromkeys(addresses) if a != mine]
            else:
                # now and then a seed or a forgotten member: after a long
                # partition both sides have forgotten each other
                known = {m.address for m in peers}
                probes = [a for a in [str(seed) for seed in self.config.seeds]
                          + self.membership.forgotten_addresses()
                          if a != mine and a not in known]
                if probes and self.rng.random() < PROBE_CHANCE:
                    targets.append((None, self.rng.choice(probes)))
            table = self._table()
            calls = [self._gossip_with(node_id, address, table) for node_id, address in targets]
        except Exception:
            log.failure("gossip round failed")
            return succeed(None)
        return DeferredList(calls, consumeErrors=True)

    def _table(self) -> Envelope:
        """
        This node's member table as a gossip message.
        """
        env = Envelope()
        for m in self.membership.members():
            member_to_pb(m, env.gossip.members.add())
        return env

    def _gossip_with(self, node_id: Optional[str], address: str, table: Envelope
                     ) -> Deferred[None]:
        # one envelope serves every target: a call sets its request id and
        # sends it at once
        def send(link: PeerProtocol) -> Deferred[Envelope]:
            return link.call(table)

        def merge(reply: Envelope) -> None:
            if reply.WhichOneof("body") == "gossip":
                self._merge([member_from_pb(m) for m in reply.gossip.members])

        def failed(f: Failure) -> None:
            log.debug("gossip with {address} failed: {why}", address=address,
                      why=f.getErrorMessage())

        return self.pool.get(node_id, address).addCallback(send).addCallbacks(merge, failed)

    def _stabilize(self) -> Deferred[Any]:
        """
        One stabilization round (push-based): when the ring changed since
        the last complete pass, when this node holds keys it does not own,
        or every C{full_pass_interval} anyway, push every record to the
        other owners of its key, in slices, and drop records this node does
        not own once all their owners have them.
        """
        version = self.membership.version
        now = self.reactor.seconds()
        if (version == self._stable_version and not self._holds_foreign
                and now - self._full_pass_at < self.config.full_pass_interval):
            return succeed(None)
        self._full_pass_at = now
        return Deferred.fromCoroutine(self._stabilize_pass(version)).addErrback(
            lambda f: log.failure("stabilization failed", f)
        )

    async def _stabilize_pass(self, version: int) -> None:
        keys = self.store.keys()
        # a push may set it again while the pass runs
        self._holds_foreign = False
        ttl = self.config.tombstone_ttl
        self.store.collect_tombstones(self.reactor.seconds(), ttl)
        try:
            complete = await self._push_slices(keys)
        finally:
            self.backlog = 0
        if complete:
            self._stable_version = version

    async def _push_slices(self, keys: list[bytes]) -> bool:
        """
        Push C{keys}' records to their other owners, a slice at a time;
        whether every owner took every push.
        """
        complete = True
        for start in range(0, len(keys), PUSH_BATCH):
            self.backlog = len(keys) - start
            batch = keys[start : start + PUSH_BATCH]
            plans: dict[str, list[tuple[bytes, Record]]] = {}
            owners_of: dict[bytes, list[str]] = {}
            pushed: dict[bytes, bytes] = {}
            for key in batch:
                record = self.store.get(key)
                if record.version == NO_VERSION:
                    continue
                owners = self.replicas_for(key)
                owners_of[key] = owners
                pushed[key] = record.version
                for owner in owners:
                    if owner != self.node_id:
                        plans.setdefault(owner, []).append((key, record))
            acked: dict[str, set[bytes]] = {}
            results = await DeferredList(
                [self._push(owner, records) for owner, records in plans.items()],
                consumeErrors=True,
            )
            for owner, (ok, stored) in zip(plans, results):
                if ok:
                    acked[owner] = stored
                else:
                    complete = False
            for key, owners in owners_of.items():
                if self.node_id in owners:
                    continue
                # drop only the version the owners acknowledged: a newer one
                # may have arrived meanwhile, and it is not theirs yet
                if all(key in acked.get(o, ()) for o in owners) and self.store.drop(
                        key, pushed[key]):
                    self.stats["handed_off"] += 1
                else:
                    self._holds_foreign = True
            # let the reactor serve clients between slices
            await deferLater(self.reactor, 0)
        return complete

    def _push(self, owner: str, records: list[tuple[bytes, Record]]) -> Deferred[set[bytes]]:
        """
        Push C{records} to C{owner} in messages of at most half a frame;
        fire with the keys it acknowledged.
        """
        return Deferred.fromCoroutine(self._push_all(owner, records))

    async def _push_all(self, owner: str, records: list[tuple[bytes, Record]]) -> set[bytes]:
        stored: set[bytes] = set()
        for chunk in _chunks(records, self.config.max_message):
            env = Envelope()
            for key, record in chunk:
                record_to_pb(key, record, env.push.records.add())
            link = await self._link(owner)
            reply = await link.call(env)
            self.stats["pushed"] += len(chunk)
            stored.update(reply.push_ack.stored)
        return stored

    # -- INFO and MEMBERS

    def info(self, section: Optional[str]) -> list[str]:
        """
        The C{INFO} reply: sections of C{name:value} lines, as Redis has.
        """
        now = self.reactor.seconds()
        members = self.membership.members()
        me = self.membership.me
        rss = resident_memory()
        peak = max(rss, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        sections = {
            "server": [
                ("dhtwisted_version", __version__),
                ("node_id", self.node_id),
                ("address", str(self.address or self.config.listen)),
                ("process_id", os.getpid()),
                ("python_version", sys.version.split()[0]),
                ("uptime_in_seconds", int(now - self.started_at)),
            ],
            "clients": [
                ("connected_clients", self.factory.clients),
                ("maxclients", self.config.max_clients),
                ("peer_links", len(self.pool.links)),
            ],
            "keyspace": [
                ("keys", self.store.live_keys),
                ("records", len(self.store)),
                ("tombstones", len(self.store) - self.store.live_keys),
                ("locked_keys", self.participant.locked_keys),
            ],
            "cluster": [
                ("members", len(members)),
                ("live_members", sum(m.live for m in members)),
                ("replicas", self.config.replicas),
                ("read_quorum", self.config.read_quorum),
                ("ring_size", self.config.ring_size),
                ("tokens", ",".join(map(str, self.tokens))),
                ("ring_agreed", int(ring_agreed(me, members))),
            ],
            "memory": [
                ("used_memory_rss", rss),
                ("used_memory_rss_human", human_size(rss, 2)),
                ("used_memory_peak", peak),
                ("used_memory_peak_human", human_size(peak, 2)),
                ("rss_per_record", rss // len(self.store) if len(self.store) else 0),
                ("mem_allocator", self.allocator),
            ],
            "stats": [
                ("total_commands_processed", sum(self.commands.calls.values())),
                ("total_error_replies", self.commands.errors),
                ("txn_commits", self.coordinator.stats["commits"]),
                ("txn_aborts", self.coordinator.stats["aborts"]),
                ("txn_retries", self.coordinator.stats["retries"]),
                ("txn_unconfirmed", self.coordinator.stats["unconfirmed"]),
                ("txn_resolved", self.stats["resolved"]),
                ("txn_in_doubt", self.participant.in_doubt),
                ("gossip_rounds", self.stats["gossip_rounds"]),
                ("stabilization_pushed", self.stats["pushed"]),
                ("stabilization_handed_off", self.stats["handed_off"]),
                ("stabilization_backlog", self.backlog),
                ("instantaneous_ops_per_sec", round(me.rate, 1)),
            ]
            + [(f"cmd_{name.decode().lower()}", n)
               for name, n in sorted(self.commands.calls.items())],
        }
        if section not in (None, "all", "everything", "default"):
            sections = {k: v for k, v in sections.items() if k == section}
        # no blank line between sections: in the text protocol a blank line
        # ends the reply
        lines = []
        for name, pairs in sections.items():
            lines.append(f"# {name.capitalize()}")
            lines.extend(f"{key}:{value}" for key, value in pairs)
        return lines

    def status(self) -> dict[str, Any]:
        """
        The cluster as this node sees it (C{DHT STATUS}): see
        L{dhtwisted.status.cluster_status}.
        """
        now = self.reactor.seconds()
        membership = self.membership
        members = membership.members()
        ages = {m.node_id: now - membership.heard(m.node_id) for m in members}
        # this node's own figures as of now, not of its last heartbeat
        me = dataclasses.replace(membership.me, keys=self.store.live_keys,
                                 memory=resident_memory())
        members = [me if m.node_id == me.node_id else m for m in members]
        doc = cluster_status(me, members, ages, self.ring, self.config.replicas)
        doc["time"] = now
        return doc

    def ring_status(self) -> dict[str, Any]:
        """
        Token ownership (C{DHT RING}): see L{dhtwisted.status.ring_status}.
        """
        return ring_status(self.ring, self.config.replicas)

    def key_status(self, key: bytes, done: Callable[[Any], None]) -> Any:
        """
        Where C{key} lives and the version each of its replicas holds
        (C{DHT KEY}), asking them; see L{dhtwisted.status.key_status}.

        :return: the document, or L{PENDING} and later C{done} with it.
        """
        ring = self.ring
        replicas = self.config.replicas
        nodes = ring.preference_list(key, replicas)
        if not nodes:
            return key_status(key, ring, replicas, {})
        held: dict[str, Any] = {}
        waiting = {"at_once": True, "doc": PENDING}

        def answer(node: str, records: Any) -> None:
            held[node] = records[0] if isinstance(records, list) and records else records
            if len(held) == len(nodes):
                try:
                    doc: Any = key_status(key, ring, replicas, held)
                except Exception as e:  # a bug: the command answers an error
                    doc = e
                if waiting["at_once"]:
                    waiting["doc"] = doc
                else:
                    done(doc)

        for node in nodes:
            self.replica(node).read([key], functools.partial(answer, node))
        waiting["at_once"] = False
        if isinstance(waiting["doc"], Exception):
            raise waiting["doc"]
        return waiting["doc"]

    def leave(self) -> bool:
        """
        Leave the cluster for good (C{DHT LEAVE}): stop the process, which
        hands this node's keys over first (L{stopService}).

        :return: whether it is leaving (it cannot stop a process it was not
            given the means to stop).
        """
        if self._shutdown is None:
            return False
        if self._leaving:
            return True
        self._leaving = True
        log.info("node {node} asked to leave the cluster", node=self.node_id)
        self.reactor.callLater(0, self._shutdown)
        return True

    def members(self) -> list[str]:
        """
        The C{MEMBERS} reply: one line per member as this node sees it.
        """
        now = self.reactor.seconds()
        lines = []
        for m in self.membership.members():
            age = now - self.membership.heard(m.node_id)
            tokens = ",".join(map(str, m.tokens))
            lines.append(f"{m.node_id} {m.address} ring_ids={tokens} status={m.status} "
                         f"heartbeat_age={age:.1f}")
        return lines


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def resident_memory() -> int:
    """
    This process's resident memory in bytes (its peak, where the current
    figure cannot be read).
    """
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _listen_now(endpoint: Any, factory: Any, where: str) -> IListeningPort:
    """
    Listen on C{endpoint}; raise at once if that fails, so that twistd
    stops with the reason.
    """
    outcome: list[Any] = []
    endpoint.listen(factory).addBoth(outcome.append)
    if not outcome:
        raise RuntimeError(f"listening on {where} did not finish at once")
    result = outcome[0]
    if not IListeningPort.providedBy(result):
        result.raiseException()
    return result  # type: ignore[no-any-return]


def _record_cost(key: bytes, record: Record) -> int:
    """
    About how many bytes C{key}'s record takes in a peer message.
    """
    return len(key) + len(record.value or b"") + 32


def _chunks(records: list[tuple[bytes, Record]], budget: int
            ) -> Iterator[list[tuple[bytes, Record]]]:
    """
    C{records} in runs of at most C{budget} bytes (at least one record each).
    """
    chunk: list[tuple[bytes, Record]] = []
    size = 0
    for key, record in records:
        cost = _record_cost(key, record)
        if chunk and size + cost > budget:
            yield chunk
            chunk, size = [], 0
        chunk.append((key, record))
        size += cost
    if chunk:
        yield chunk
