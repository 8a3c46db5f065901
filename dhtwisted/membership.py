# -*- test-case-name: tests.test_membership -*-
"""
The member table and its merge rules: who is in the cluster, and in what
state.

Each node increments its own heartbeat; gossip spreads the table. A member
whose heartbeat has not increased for C{fail_after / 2} seconds is
I{suspect}, for C{fail_after} seconds I{dead}; a dead or departed member is
forgotten C{remove_after} seconds after its last sign of life. A restarted
node comes back with a greater I{generation} (its start time), which
replaces everything known of the old one. Live members (alive or suspect)
are on the ring.

Pure: the caller passes the time in; no Twisted, no I/O.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Iterable, Optional

__all__ = ["ALIVE", "DEAD", "LEFT", "SUSPECT", "Member", "Membership", "Refused"]

ALIVE = "alive"
SUSPECT = "suspect"
DEAD = "dead"
LEFT = "left"
_LIVE = (ALIVE, SUSPECT)


class Refused(Exception):
    """
    A node may not join: it claims an id or a ring position that a live
    member with another address holds.
    """


@dataclass(frozen=True)
class Member:
    """
    What gossip says about one node.

    :ivar node_id: its id.
    :ivar address: C{host:port} its peers dial.
    :ivar tokens: its ring positions, C{ring_id} first.
    :ivar generation: its start time in milliseconds; greater after a restart.
    :ivar heartbeat: increases while it runs.
    :ivar status: L{ALIVE}, L{SUSPECT}, L{DEAD} or L{LEFT}.
    :ivar keys: live keys it holds, as of its last heartbeat.
    :ivar memory: its resident memory in bytes, as of its last heartbeat.
    :ivar rate: client commands per second it served lately.
    :ivar view: a digest of the ring it sees (L{ring_digest}): members
        agree on membership when their digests are equal.
    """

    node_id: str
    address: str
    tokens: tuple[int, ...]
    generation: int
    heartbeat: int = 0
    status: str = ALIVE
    keys: int = 0
    memory: int = 0
    rate: float = 0.0
    view: int = 0

    @property
    def ring_id(self) -> int:
        """
        The node's first ring position.
        """
        return self.tokens[0]

    @property
    def live(self) -> bool:
        """
        Whether it is on the ring (alive or suspect).
        """
        return self.status in _LIVE


@dataclass
class _Entry:
    member: Member
    heard: float  # local time its heartbeat last increased (or it joined)


class Membership:
    """
    One node's view of the cluster.

    :param me: this node.
    :param now: the current time.
    :param fail_after: seconds without a heartbeat increase before dead.
    :param remove_after: seconds without one before a dead member is forgotten.
    """

    def __init__(self, me: Member, now: float, fail_after: float, remove_after: float) -> None:
        self.node_id = me.node_id
        self._fail_after = fail_after
        self._remove_after = remove_after
        self._entries: dict[str, _Entry] = {me.node_id: _Entry(me, now)}
        # members forgotten: id -> (generation, heartbeat) last known, so
        # that stale gossip does not bring them back
        self._forgotten: dict[str, tuple[int, int]] = {}
        self._forgotten_at: dict[str, str] = {}  # id -> last known address
        self.version = 0  # increases whenever the set of live members changes
        # the most live members this node has seen at once, less those that
        # left since: how big the cluster is meant to be
        self.peak = 1

    # -- reading

    @property
    def me(self) -> Member:
        """
        This node's own entry.
        """
        return self._entries[self.node_id].member

    def get(self, node_id: str) -> Optional[Member]:
        """
        The member C{node_id}, if known.
        """
        entry = self._entries.get(node_id)
        return entry.member if entry else None

    def members(self) -> list[Member]:
        """
        Every member known, in id order.
        """
        return [self._entries[k].member for k in sorted(self._entries)]

    def live(self) -> list[Member]:
        """
        The members on the ring: alive or suspect.
        """
        return [m for m in self.members() if m.live]

    def peers(self) -> list[Member]:
        """
        The live members other than this node.
        """
        return [m for m in self.live() if m.node_id != self.node_id]

    def ring_tokens(self) -> dict[str, tuple[int, ...]]:
        """
        Node id to tokens, for the live members.
        """
        return {m.node_id: m.tokens for m in self.live()}

    def forgotten_addresses(self) -> list[str]:
        """
        The addresses of members forgotten after they died: a partition
        that heals late is found again by probing them.
        """
        return sorted(set(self._forgotten_at.values()))

    def heard(self, node_id: str) -> float:
        """
        When C{node_id}'s heartbeat last increased, in local time.
        """
        return self._entries[node_id].heard

    # -- changing

    def beat(self, now: float, **load: float) -> None:
        """
        Increase this node's heartbeat; C{load} updates what it says of its
        load (C{keys}, C{memory}, C{rate}, C{view}), which gossip carries
        with the heartbeat.
        """
        entry = self._entries[self.node_id]
        entry.member = dataclasses.replace(entry.member, heartbeat=entry.member.heartbeat + 1,
                                           **load)  # type: ignore[arg-type]
        entry.heard = now

    def ring_digest(self) -> int:
        """
        A digest of the ring this node sees: its live members and their
        tokens. Two nodes with the same digest agree on who is on the ring.
        """
        text = ";".join(f"{m.node_id}={','.join(map(str, m.tokens))}" for m in self.live())
        return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")

    def update_me(self, **changes: object) -> None:
        """
        Change this node's own entry (e.g. its address once it listens).
        """
        entry = self._entries[self.node_id]
        entry.member = dataclasses.replace(entry.member, **changes)  # type: ignore[arg-type]
        self.version += 1

    def leave(self, now: float) -> None:
        """
        Mark this node as leaving the cluster for good.
        """
        entry = self._entries[self.node_id]
        entry.member = dataclasses.replace(
            entry.member, status=LEFT, heartbeat=entry.member.heartbeat + 1
        )
        entry.heard = now
        self.version += 1

    def check_join(self, newcomer: Member) -> None:
        """
        Refuse a newcomer that claims the id or the ring position of a live
        member at another address.

        :raises Refused: saying which.
        """
        for entry in self._entries.values():
            known = entry.member
            if not known.live or known.address == newcomer.address:
                continue
            if known.node_id == newcomer.node_id:
                raise Refused(
                    f"node id {newcomer.node_id} is already used by the member at {known.address}"
                )
            if known.ring_id == newcomer.ring_id:
                raise Refused(
                    f"ring_id {newcomer.ring_id} is already used by node {known.node_id} "
                    f"at {known.address}"
                )

    def merge(self, remote: Iterable[Member], now: float) -> list[tuple[str, str, str]]:
        """
        Merge another node's view into this one.

        :return: the status changes it caused, as C{(node_id, old, new)};
            C{old} is C{""} for a member new to this node.
        """
        changes: list[tuple[str, str, str]] = []
        remote = list(remote)
        for member in remote:
            change = self._merge_one(member, now)
            if change is not None:
                changes.append(change)
        # a table that names more members (dead ones too) than this node has
        # seen live tells how big the cluster is: a node that restarted and
        # so far met only a few of them must not take itself for the cluster
        named = {m.node_id for m in remote if m.status != LEFT} | {self.node_id}
        self.peak = max(self.peak, len(named))
        if any((old in _LIVE) != (new in _LIVE) for _, old, new in changes):
            self.version += 1
        self._count(changes)
        return changes

    def _count(self, changes: list[tuple[str, str, str]]) -> None:
        departed = sum(1 for _, old, new in changes if new == LEFT and old != LEFT)
        self.peak = max(1, self.peak - departed, len(self.live()))

    def _merge_one(self, member: Member, now: float) -> Optional[tuple[str, str, str]]:
        if member.node_id == self.node_id:
            return None  # only this node speaks for itself
        entry = self._entries.get(member.node_id)
        if entry is None:
            last = self._forgotten.get(member.node_id)
            if last is not None and (member.generation, member.heartbeat) <= last:
                return None
            if member.status not in _LIVE:
                return None  # no need to learn of the dead
            self._forgotten.pop(member.node_id, None)
            self._forgotten_at.pop(member.node_id, None)
            self._entries[member.node_id] = _Entry(dataclasses.replace(member, status=ALIVE), now)
            return (member.node_id, "", ALIVE)
        known = entry.member
        if member.generation > known.generation:
            status = LEFT if member.status == LEFT else ALIVE
            entry.member = dataclasses.replace(member, status=status)
            entry.heard = now
            self.version += 1  # a restarted node may have new tokens
            return (member.node_id, known.status, status) if status != known.status else None
        if member.generation < known.generation:
            return None
        if member.status == LEFT and known.status != LEFT:
            entry.member = dataclasses.replace(known, status=LEFT, heartbeat=member.heartbeat)
            entry.heard = now
            return (member.node_id, known.status, LEFT)
        if member.heartbeat > known.heartbeat and known.status != LEFT:
            # fresher news of the same node: everything it says (address,
            # tokens, load) comes with the heartbeat
            entry.member = dataclasses.replace(member, status=ALIVE)
            entry.heard = now
            if known.status != ALIVE:
                return (member.node_id, known.status, ALIVE)
        return None

    def check(self, now: float) -> list[tuple[str, str, str]]:
        """
        Age the members: suspect, dead, forgotten.

        :return: the status changes, as C{(node_id, old, new)}; C{new} is
            C{""} for a member forgotten.
        """
        changes: list[tuple[str, str, str]] = []
        for node_id in list(self._entries):
            if node_id == self.node_id:
                continue
            entry = self._entries[node_id]
            member = entry.member
            age = now - entry.heard
            if member.status in (DEAD, LEFT) and age >= self._remove_after:
                del self._entries[node_id]
                self._forgotten[node_id] = (member.generation, member.heartbeat)
                if member.status == DEAD:
                    self._forgotten_at[node_id] = member.address
                changes.append((node_id, member.status, ""))
                continue
            status = member.status
            if status in _LIVE:
                if age >= self._fail_after:
                    status = DEAD
                elif age >= self._fail_after / 2:
                    status = SUSPECT
            if status != member.status:
                entry.member = dataclasses.replace(member, status=status)
                changes.append((node_id, member.status, status))
        if any((old in _LIVE) != (new in _LIVE) for _, old, new in changes):
            self.version += 1
        self._count(changes)
        return changes
