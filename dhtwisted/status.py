# -*- test-case-name: tests.test_status -*-
"""
What an operator sees of a node and of the cluster as it sees it: the
documents behind C{DHT STATUS}, C{DHT RING} and C{DHT KEY}, which
C{dht-admin}, the status page and scripts read as JSON.

Pure: the node passes its state and the time in.
"""

from __future__ import annotations

import datetime
from collections import deque
from typing import Any, Iterable, Mapping, Optional

from .membership import ALIVE, DEAD, LEFT, SUSPECT, Member
from .ring import Ring, key_position
from .store import Record
from .version import NO_VERSION, VERSION_SIZE, version_millis

__all__ = ["RateMeter", "cluster_status", "human_size", "key_status", "ring_agreed",
           "ring_status", "status_counts", "version_text"]


def human_size(n: float, decimals: int = 1) -> str:
    """
    A byte count for people, in powers of 1024: C{512B}, C{48.0M}.
    """
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:.0f}B" if unit == "B" else f"{n:.{decimals}f}{unit}"
        n /= 1024
    raise AssertionError("unreachable")


class RateMeter:
    """
    Events per second over the last C{window} seconds, from a running total
    sampled now and then (each heartbeat).
    """

    def __init__(self, window: float = 5.0) -> None:
        self._window = window
        self._samples: deque[tuple[float, int]] = deque()

    def update(self, now: float, total: int) -> float:
        """
        Record C{total} at C{now}; the rate since the oldest sample kept.
        """
        samples = self._samples
        samples.append((now, total))
        while len(samples) > 2 and now - samples[1][0] >= self._window:
            samples.popleft()
        first_time, first_total = samples[0]
        if now <= first_time:
            return 0.0
        return max(0, total - first_total) / (now - first_time)


def status_counts(members: Iterable[Member]) -> dict[str, int]:
    """
    How many of C{members} are alive, suspect, dead and left.
    """
    counts = dict.fromkeys((ALIVE, SUSPECT, DEAD, LEFT), 0)
    for m in members:
        counts[m.status] += 1
    return counts


def ring_agreed(me: Member, members: Iterable[Member]) -> bool:
    """
    Whether every live member gossips the ring digest C{me} has (see
    L{dhtwisted.membership.Member.view}).
    """
    return me.view != 0 and all(m.view == me.view for m in members if m.live)


def cluster_status(me: Member, members: Iterable[Member], ages: Mapping[str, float],
                   ring: Ring, replicas: int) -> dict[str, Any]:
    """
    The cluster as the node C{me} sees it.

    :param members: every member it knows, itself included.
    :param ages: seconds since each member's heartbeat last increased.
    :param ring: the ring of the live members.
    :param replicas: copies of each key.
    """
    members = list(members)
    share = ring.primary_share()
    owns = ring.ownership(replicas)
    rows = []
    for m in members:
        rows.append({
            "id": m.node_id,
            "address": m.address,
            "status": m.status,
            "tokens": list(m.tokens),
            "share": share.get(m.node_id, 0.0),
            "owns": owns.get(m.node_id, 0.0),
            "keys": m.keys,
            "memory": m.memory,
            "rate": round(m.rate, 1),
            "heartbeat_age": round(ages.get(m.node_id, 0.0), 3),
            "generation": m.generation,
            "agrees": m.view == me.view and m.view != 0,
            "me": m.node_id == me.node_id,
        })
    counts = status_counts(members)
    return {
        "node": me.node_id,
        "members": rows,
        "summary": {
            "members": len(rows),
            "alive": counts[ALIVE],
            "suspect": counts[SUSPECT],
            "dead": counts[DEAD],
            "left": counts[LEFT],
            "replicas": replicas,
            "on_ring": len(ring),
            "agree": ring_agreed(me, members),
        },
    }


def ring_status(ring: Ring, replicas: int) -> dict[str, Any]:
    """
    Every token, the range of positions it owns and the nodes holding the
    keys in that range.
    """
    size = ring.ring_size
    return {
        "ring_size": size,
        "replicas": replicas,
        "primary_share": ring.primary_share(),
        "ownership": ring.ownership(replicas),
        "tokens": [
            {"token": token, "node": nodes[0], "first": first,
             "share": ((token - first) % size + 1) / size, "replicas": list(nodes)}
            for first, token, nodes in ring.arcs(replicas)
        ],
    }


def key_status(key: bytes, ring: Ring, replicas: int,
               held: Mapping[str, Any]) -> dict[str, Any]:
    """
    Where C{key} lives: its position, its preference list and what each
    replica holds.

    :param held: node id to the L{Record} it answered, or an exception.
    """
    nodes = ring.preference_list(key, replicas)
    rows = []
    for node in nodes:
        answer = held.get(node)
        row: dict[str, Any] = {"node": node}
        if isinstance(answer, Record):
            row.update(version=version_text(answer.version),
                       tombstone=answer.version != NO_VERSION and answer.value is None,
                       value_bytes=None if answer.value is None else len(answer.value))
        else:
            row["error"] = str(answer) if answer is not None else "no answer"
        rows.append(row)
    return {
        "key": key.decode("utf-8", "backslashreplace"),
        "position": key_position(key, ring.ring_size),
        "ring_size": ring.ring_size,
        "preference_list": list(nodes),
        "replicas": rows,
    }


def version_text(version: bytes) -> Optional[str]:
    """
    A version for people: C{2026-11-24T09:30:01.123Z+5/1a2b3c4d} (its
    wall-clock time, logical counter and node tag), or C{None} for a key
    never written there.
    """
    if version == NO_VERSION:
        return None
    if len(version) != VERSION_SIZE:
        return version.hex()
    millis = version_millis(version)
    logical = int.from_bytes(version[6:8], "big")
    try:
        when = datetime.datetime.fromtimestamp(millis / 1000, datetime.timezone.utc)
    except (ValueError, OverflowError, OSError):
        return version.hex()  # a time no calendar holds: a bad version from a peer
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis % 1000:03d}Z"
    return f"{stamp}+{logical}/{version[8:].hex()}"
