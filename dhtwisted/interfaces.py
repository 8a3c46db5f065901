"""
The interfaces between dhtwisted's parts.
"""

from __future__ import annotations

from zope.interface import Interface


class IReplica(Interface):
    """
    One node as a holder of data, seen from a coordinator: the node itself
    (called directly) or a peer (reached over its peer link).

    Every method takes an C{answer} callable and calls it exactly once: with
    the result, or with an C{Exception} if the call failed or timed out.
    It may be called before the method returns (this node answers at once)
    and must be called within the RPC timeout (a peer link enforces it; a
    peer that must be dialled first may take the dial's timeout more).
    Callbacks rather than Deferreds: these calls are the hot path of every
    read and write.
    """

    def prepare(txid: str, writes: list, participants: list,  # type: ignore[misc]
                priority: bytes, answer: object, partial: bool) -> None:
        """
        Lock and stage C{writes} (C{(key, value or None)} pairs) for
        transaction C{txid}; answer a L{dhtwisted.twopc.Vote}. An older
        C{priority} may wait for a lock held by a younger transaction.
        With C{partial}, writes whose keys are locked are left out and
        named in the vote (see L{dhtwisted.twopc.Participant.prepare}).
        """

    def commit(txid: str, version: bytes, writes: object,  # type: ignore[misc]
               answer: object, skip: object) -> None:
        """
        Apply the writes staged for C{txid} (or C{writes}, when not
        C{None}) at C{version}, but those of the keys in C{skip}, and
        release their locks; answer whether it is now committed there.
        """

    def abort(txid: str, answer: object) -> None:  # type: ignore[misc]
        """
        Drop the writes staged for C{txid} and release their locks; answer
        whether it had been prepared there.
        """

    def read(keys: list, answer: object) -> None:  # type: ignore[misc]
        """
        Answer the L{dhtwisted.store.Record} held for each of C{keys}.
        """
