"""
The interfaces between dhtwisted's parts.
"""

from __future__ import annotations

from zope.interface import Interface


class IReplica(Interface):
    """
    One node as a holder of data, seen from a coordinator: the node itself
    (called directly) or a peer (reached over its peer link). Every method
    returns a Deferred.
    """

    def prepare(txid: str, writes: list, participants: list,  # type: ignore[misc]
                priority: bytes = b"") -> object:
        """
        Lock and stage C{writes} (C{(key, value or None)} pairs) for
        transaction C{txid}; fire with a L{dhtwisted.twopc.Vote}. An older
        C{priority} may wait for a lock held by a younger transaction.
        """

    def commit(txid: str, version: bytes, writes: object = None) -> object:  # type: ignore[misc]
        """
        Apply the writes staged for C{txid} (or C{writes}, when given) at
        C{version} and release their locks; fire with whether it is now
        committed there.
        """

    def abort(txid: str) -> object:  # type: ignore[misc]
        """
        Drop the writes staged for C{txid} and release their locks.
        """

    def read(keys: list) -> object:  # type: ignore[misc]
        """
        Fire with the L{dhtwisted.store.Record} held for each of C{keys}.
        """
