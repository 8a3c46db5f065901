# -*- test-case-name: tests.test_store -*-
"""
The versioned in-memory key-value store of one node.

Each key maps to its newest known record: a version and a value, or a
tombstone (a versioned delete). L{Store.apply} never replaces a record with
an older one, whatever order writes arrive in.

Records are kept packed in one bytes object per key (version, kind byte,
value) to keep the per-key memory cost low. Pure: no I/O, no clock.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple, Optional, Sequence

from .version import NO_VERSION, VERSION_SIZE, version_millis

__all__ = ["ABSENT", "MISSING", "Record", "Store"]

_VERSION_LEN = VERSION_SIZE
_LIVE = b"v"
_TOMBSTONE = b"t"
_LIVE_BYTE = _LIVE[0]


class Record(NamedTuple):
    """
    What a replica holds for a key.

    :ivar version: the write's version; L{NO_VERSION} for a key never written.
    :ivar value: the value, or C{None} for a tombstone.
    """

    version: bytes
    value: Optional[bytes]


#: The record of a key that is not there at all.
MISSING = Record(NO_VERSION, None)
#: What L{Store.lookup} returns for a key with no record.
ABSENT = object()


def _unpack(packed: bytes) -> Record:
    if packed[_VERSION_LEN : _VERSION_LEN + 1] == _TOMBSTONE:
        return Record(packed[:_VERSION_LEN], None)
    return Record(packed[:_VERSION_LEN], packed[_VERSION_LEN + 1 :])


class Store:
    """
    Keys to their newest records.
    """

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._live = 0

    def __len__(self) -> int:
        """
        The number of records held, tombstones included.
        """
        return len(self._data)

    @property
    def live_keys(self) -> int:
        """
        The number of keys that have a value (not a tombstone).
        """
        return self._live

    def get(self, key: bytes) -> Record:
        """
        The record held for C{key}; L{MISSING} if none.
        """
        packed = self._data.get(key)
        if packed is None:
            return MISSING
        return _unpack(packed)

    def lookup(self, key: bytes) -> object:
        """
        The value held for C{key}, C{None} for a tombstone, or L{ABSENT}
        if no record is held. (For the read path of every C{GET}.)
        """
        packed = self._data.get(key)
        if packed is None:
            return ABSENT
        if packed[_VERSION_LEN] != _LIVE_BYTE:
            return None
        return packed[_VERSION_LEN + 1 :]

    def version_of(self, key: bytes) -> bytes:
        """
        The version held for C{key}; L{NO_VERSION} if none.
        """
        packed = self._data.get(key)
        return NO_VERSION if packed is None else packed[:_VERSION_LEN]

    def survey(self, keys: Sequence[bytes]) -> tuple[bytes, tuple[bool, ...]]:
        """
        The newest version held of any of C{keys} (L{NO_VERSION} if none),
        and whether each has a value (not a tombstone): what a replica
        votes with.
        """
        records = list(map(self._data.get, keys))
        held = list(filter(None, records))
        # a record starts with its version: the greatest record has the newest
        newest = max(held)[:_VERSION_LEN] if held else NO_VERSION
        live = _LIVE_BYTE
        return newest, tuple([r is not None and r[_VERSION_LEN] == live for r in records])

    def apply(self, key: bytes, version: bytes, value: Optional[bytes]) -> bool:
        """
        Keep C{value} (C{None}: a tombstone) at C{version} unless a record at
        the same or a newer version is already held.

        :return: whether the store changed.
        """
        return self.put(key, version, value) is not None

    def put(self, key: bytes, version: bytes, value: Optional[bytes]) -> Optional[bool]:
        """
        L{apply}, telling what it replaced.

        :return: whether the key had a value (not a tombstone) before;
            C{None} if a record at the same or a newer version is held, and
            nothing changed.
        """
        if len(version) != _VERSION_LEN:
            raise ValueError(f"a version is {_VERSION_LEN} bytes, got {len(version)}")
        data = self._data
        old = data.get(key)
        existed = False
        if old is not None:
            if old >= version:  # (see put_all)
                return None
            if old[_VERSION_LEN] == _LIVE_BYTE:
                self._live -= 1
                existed = True
        if value is None:
            data[key] = version + _TOMBSTONE
        else:
            data[key] = version + _LIVE + value
            self._live += 1
        return existed

    def put_all(self, writes: Sequence[tuple[bytes, Optional[bytes]]], version: bytes) -> None:
        """
        L{apply} each of C{writes} (C{(key, value or None)} pairs) at
        C{version}: a committed transaction's writes, in one call.
        """
        if len(version) != _VERSION_LEN:
            raise ValueError(f"a version is {_VERSION_LEN} bytes, got {len(version)}")
        data = self._data
        get = data.get
        live_prefix = version + _LIVE
        tombstone = version + _TOMBSTONE
        live = 0
        for key, value in writes:
            old = get(key)
            if old is not None:
                # the record starts with its version, and version is exactly
                # that long: the record compares as its version would (a
                # record at this very version is the greater one), without
                # slicing a copy of it out
                if old >= version:
                    continue
                if old[_VERSION_LEN] == _LIVE_BYTE:
                    live -= 1
            if value is None:
                data[key] = tombstone
            else:
                data[key] = live_prefix + value
                live += 1
        self._live += live

    def items(self) -> Iterator[tuple[bytes, Record]]:
        """
        Every key with its record, tombstones included. Do not change the
        store while iterating.
        """
        for key, packed in self._data.items():
            yield key, _unpack(packed)

    def keys(self) -> list[bytes]:
        """
        A snapshot of every key held, tombstones included.
        """
        return list(self._data)

    def drop(self, key: bytes, version: bytes) -> bool:
        """
        Forget C{key} if the record held is still the one at C{version}
        (for handing a key over to its owners, and collecting tombstones).

        :return: whether the key was dropped.
        """
        packed = self._data.get(key)
        if packed is None or packed[:_VERSION_LEN] != version:
            return False
        del self._data[key]
        if packed[_VERSION_LEN : _VERSION_LEN + 1] == _LIVE:
            self._live -= 1
        return True

    def collect_tombstones(self, now: float, ttl: float, limit: int = 10_000) -> int:
        """
        Forget up to C{limit} tombstones older than C{ttl} seconds at C{now}.

        :return: how many were collected.
        """
        cutoff = int((now - ttl) * 1000)
        old = []
        for key, packed in self._data.items():
            if (
                packed[_VERSION_LEN : _VERSION_LEN + 1] == _TOMBSTONE
                and version_millis(packed) < cutoff
            ):
                old.append(key)
                if len(old) >= limit:
                    break
        for key in old:
            del self._data[key]
        return len(old)
