# -*- test-case-name: tests.test_version -*-
"""
Versions of committed writes: a hybrid logical clock plus a node tag.

A version is 12 bytes, compared as bytes: 6 bytes of milliseconds since the
epoch, 2 bytes of logical counter, 4 bytes naming the node that assigned it
(a CRC-32 of its id, the tie-break). Bytes order is version order, so a store
compares versions without decoding them, and the millisecond part tells how
old a tombstone is.

Pure: the clock reads time through the callable it is given.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from typing import Callable

__all__ = ["HybridClock", "NO_VERSION", "VERSION_SIZE", "node_tag", "version_millis"]

#: The version of a key that was never written: older than every real version.
NO_VERSION = b""

_PACK = struct.Struct(">QI")
#: The size of a version in bytes.
VERSION_SIZE = _PACK.size
_LOGICAL_BITS = 16
_LOGICAL_MAX = (1 << _LOGICAL_BITS) - 1


def node_tag(node_id: str) -> int:
    """
    The 32-bit tie-break that a node puts in the versions it assigns.
    """
    return zlib.crc32(node_id.encode("utf-8"))


def version_millis(version: bytes) -> int:
    """
    The wall-clock milliseconds part of C{version}.
    """
    return int.from_bytes(version[:6], "big")


class HybridClock:
    """
    A hybrid logical clock (Kulkarni et al., 2014).

    Each new version is greater than every version this clock assigned or
    observed before, and stays close to wall-clock time.

    :param now: returns the current time in seconds, e.g. C{reactor.seconds}.
    :param tag: this node's L{node_tag}.
    """

    def __init__(self, now: Callable[[], float], tag: int) -> None:
        self._now = now
        self._tag = tag
        self._last = 0  # (millis << 16) | logical

    def _physical(self) -> int:
        return int(self._now() * 1000) << _LOGICAL_BITS

    def next(self) -> bytes:
        """
        A new version, greater than any this clock has assigned or observed.
        """
        physical = self._physical()
        if physical > self._last:
            self._last = physical
        else:
            self._last += 1
        return _PACK.pack(self._last, self._tag)

    def next_run(self, count: int) -> list[bytes]:
        """
        C{count} new versions, in order: as many calls of L{next}, with one
        look at the time.
        """
        physical = self._physical()
        first = physical if physical > self._last else self._last + 1
        self._last = first + count - 1
        stamps = range(first, first + count)
        return list(map(_PACK.pack, stamps, itertools.repeat(self._tag, count)))

    def observe(self, version: bytes) -> None:
        """
        Remember that C{version} exists, so later versions are greater.
        """
        if len(version) == _PACK.size:
            stamp = _PACK.unpack(version)[0]
            if stamp > self._last:
                self._last = stamp

    def next_after(self, version: bytes) -> bytes:
        """
        A new version greater than C{version} and than all earlier ones.
        """
        self.observe(version)
        return self.next()
