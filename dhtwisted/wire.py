# -*- test-case-name: tests.test_peer -*-
"""
Peer messages: between protobuf (C{proto/dht.proto}) and dhtwisted's own
types. The only importer of the generated module.
"""

from __future__ import annotations

import math
from typing import Optional

from ._proto import dht_pb2
from .config import parse_address, valid_node_id
from .handshake import MAGIC, NONCE_SIZE, PREAMBLE_SIZE, PROTOCOL_VERSION, preamble
from .membership import ALIVE, DEAD, LEFT, SUSPECT, Member
from .store import Record
from .twopc import ABORTED, COMMITTED, PREPARED, UNKNOWN, Vote, Write

__all__ = [
    "Envelope",
    "Frame",
    "MAGIC",
    "PREAMBLE",
    "PREAMBLE_SIZE",
    "PROTOCOL_VERSION",
    "member_from_pb",
    "member_to_pb",
    "record_from_pb",
    "record_to_pb",
    "state_from_pb",
    "state_to_pb",
    "vote_from_pb",
    "vote_to_pb",
    "writes_from_pb",
    "writes_to_pb",
]

#: The preamble of a node without a cluster secret, with a zero nonce
#: (see L{dhtwisted.handshake}): what tests send as a dialling peer.
PREAMBLE = preamble(False, b"\0" * NONCE_SIZE)

Envelope = dht_pb2.Envelope
Frame = dht_pb2.Frame
TxnStatus = dht_pb2.TxnStatus

_STATUS_TO_PB = {ALIVE: dht_pb2.ALIVE, SUSPECT: dht_pb2.SUSPECT, DEAD: dht_pb2.DEAD,
                 LEFT: dht_pb2.LEFT}
_STATUS_FROM_PB = {v: k for k, v in _STATUS_TO_PB.items()}


def member_to_pb(member: Member, out: Optional[dht_pb2.Member] = None) -> dht_pb2.Member:
    """
    A L{Member} as a protobuf message (filled into C{out} if given).
    """
    pb = out if out is not None else dht_pb2.Member()
    pb.node_id = member.node_id
    pb.address = member.address
    pb.tokens.extend(member.tokens)
    pb.generation = member.generation
    pb.heartbeat = member.heartbeat
    pb.status = _STATUS_TO_PB[member.status]
    pb.keys = member.keys
    pb.memory = member.memory
    pb.rate = member.rate
    pb.view = member.view
    return pb


def member_from_pb(pb: dht_pb2.Member) -> Member:
    """
    A protobuf member as a L{Member}.

    :raises ValueError: if it is not a usable member.
    """
    if not pb.node_id or not pb.address or not pb.tokens:
        raise ValueError("member without id, address or tokens")
    # what operators see in tables, logs and the status page: no escapes
    if not valid_node_id(pb.node_id):
        raise ValueError(f"member with a bad id {pb.node_id[:64]!r}")
    try:
        parse_address(pb.address)
    except ValueError:
        raise ValueError(f"member {pb.node_id} with a bad address {pb.address[:64]!r}") from None
    return Member(
        node_id=pb.node_id,
        address=pb.address,
        tokens=tuple(pb.tokens),
        generation=pb.generation,
        heartbeat=pb.heartbeat,
        status=_STATUS_FROM_PB.get(pb.status, ALIVE),
        keys=pb.keys,
        memory=pb.memory,
        rate=pb.rate if math.isfinite(pb.rate) and pb.rate >= 0 else 0.0,
        view=pb.view,
    )


def record_to_pb(key: bytes, record: Record, out: dht_pb2.Record) -> None:
    """
    Fill C{out} with C{key}'s C{record}.
    """
    out.key = key
    out.version = record.version
    if record.value is None:
        out.tombstone = True
    else:
        out.value = record.value


def record_from_pb(pb: dht_pb2.Record) -> Record:
    """
    A protobuf record as a L{Record}.
    """
    return Record(pb.version, None if pb.tombstone else pb.value)


def vote_to_pb(txid: str, vote: Vote, out: dht_pb2.Vote) -> None:
    """
    Fill C{out} with C{vote} on C{txid}.
    """
    out.txid = txid
    out.yes = vote.yes
    out.reason = vote.reason
    out.conflict = vote.conflict
    out.max_version = vote.max_version
    out.existed.extend(vote.existed)
    if vote.skipped:
        out.skipped.extend(vote.skipped)


def vote_from_pb(pb: dht_pb2.Vote) -> Vote:
    """
    A protobuf vote as a L{Vote}.
    """
    return Vote(pb.yes, pb.reason, pb.conflict, pb.max_version, tuple(pb.existed),
                tuple(pb.skipped))


def writes_to_pb(writes: list[Write], out: dht_pb2.Writes) -> None:
    """
    Fill C{out} with C{writes} (C{(key, value or None)} pairs).
    """
    out.keys.extend([write[0] for write in writes])
    values = [write[1] for write in writes]
    if None in values:
        out.deletes.extend([i for i, value in enumerate(values) if value is None])
        values = [b"" if value is None else value for value in values]
    out.values.extend(values)


def writes_from_pb(pb: dht_pb2.Writes) -> list[Write]:
    """
    Packed writes as C{(key, value or None)} pairs.

    :raises ValueError: if keys and values do not pair up.
    """
    if len(pb.values) != len(pb.keys):
        raise ValueError(f"bad writes: {len(pb.keys)} keys but {len(pb.values)} values")
    if not pb.deletes:  # (SETs only: no list but the one returned)
        return list(zip(pb.keys, pb.values))
    keys = list(pb.keys)
    values: list[Optional[bytes]] = list(pb.values)
    for index in pb.deletes:
        if index >= len(values):
            raise ValueError(f"bad writes: delete of write {index} of {len(values)}")
        values[index] = None
    return list(zip(keys, values))


_STATE_TO_PB = {UNKNOWN: TxnStatus.UNKNOWN, PREPARED: TxnStatus.PREPARED,
                COMMITTED: TxnStatus.COMMITTED, ABORTED: TxnStatus.ABORTED}
_STATE_FROM_PB = {v: k for k, v in _STATE_TO_PB.items()}


def state_to_pb(state: str) -> int:
    """
    A transaction state (L{dhtwisted.twopc.COMMITTED}, ...) as a
    C{TxnStatus.State}.
    """
    return _STATE_TO_PB[state]


def state_from_pb(state: int) -> str:
    """
    A C{TxnStatus.State} as a transaction state; unknown values are
    L{dhtwisted.twopc.UNKNOWN}.
    """
    return _STATE_FROM_PB.get(state, UNKNOWN)
