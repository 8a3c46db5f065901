# -*- test-case-name: tests.test_ring -*-
"""
The consistent-hash ring: where a key lives.

A key sits at C{md5(key) mod ring_size}, as in the reference. Each node owns
one or more tokens (positions); its C{ring_id} is its first and the others,
when C{vnodes > 1}, are derived from its id so every node computes the same
ring. A key's preference list is the distinct nodes met walking clockwise
from its position: the first N are its replicas.

Pure: no Twisted, no I/O.
"""

from __future__ import annotations

import bisect
import hashlib
from typing import Iterable, Mapping, Optional, Sequence

__all__ = ["Ring", "key_position", "node_tokens"]


def key_position(key: bytes, ring_size: int) -> int:
    """
    The position of C{key} on a ring of C{ring_size} positions.
    """
    return int.from_bytes(hashlib.md5(key).digest(), "big") % ring_size


def node_tokens(node_id: str, ring_id: int, vnodes: int, ring_size: int) -> list[int]:
    """
    The tokens of a node: C{ring_id}, then C{vnodes - 1} more spread from a
    hash of the node's id and ring id.
    """
    tokens = [ring_id % ring_size]
    seen = set(tokens)
    counter = 0
    while len(tokens) < min(vnodes, ring_size):
        seed = f"{node_id}/{ring_id}/{counter}".encode("utf-8")
        token = key_position(seed, ring_size)
        counter += 1
        if token not in seen:
            seen.add(token)
            tokens.append(token)
    return tokens


class Ring:
    """
    An immutable ring built from the tokens of the live nodes.

    :param tokens: node id to that node's tokens.
    :param ring_size: the number of positions.
    """

    def __init__(self, tokens: Mapping[str, Iterable[int]], ring_size: int) -> None:
        self.ring_size = ring_size
        owners: dict[int, str] = {}
        for node_id in sorted(tokens):
            for token in tokens[node_id]:
                # two nodes on one token: the smaller id wins it, everywhere
                owners.setdefault(token % ring_size, node_id)
        self._tokens: list[int] = sorted(owners)
        self._owners: list[str] = [owners[t] for t in self._tokens]
        self.nodes: frozenset[str] = frozenset(self._owners)
        self._alone = list(self.nodes) if len(self.nodes) == 1 else None
        self._everyone = sorted(self.nodes)  # the replicas of every key, with n >= len(nodes)
        # n -> for each start index into _tokens, the first n nodes from it
        self._walks: dict[int, list[Optional[list[str]]]] = {}
        self._lists: dict[tuple[str, ...], list[str]] = {}

    def __len__(self) -> int:
        """
        The number of nodes on the ring.
        """
        return len(self.nodes)

    def preference_list(self, key: bytes, n: int) -> list[str]:
        """
        The first C{n} distinct nodes clockwise from C{key}'s position.
        """
        if self._alone is not None:
            return self._alone  # one node: no need to hash the key
        return self.walk(key_position(key, self.ring_size), n)

    def walk(self, position: int, n: int) -> list[str]:
        """
        The first C{n} distinct nodes clockwise from C{position}, starting
        with the owner of the first token at or after it.
        """
        if not self._tokens:
            return []
        return self._walk_from(bisect.bisect_left(self._tokens, position), n)

    def preference_lists(self, keys: Iterable[bytes], n: int) -> list[list[str]]:
        """
        L{preference_list} of each of C{keys}, in one call. Keys with the
        same replicas, in the same order, get the same list object.
        """
        if self._alone is not None:
            return [self._alone for _ in keys]
        tokens = self._tokens
        if not tokens:
            return [[] for _ in keys]
        walks = self._walks_of(n)
        walk_from = self._walk_from
        size = self.ring_size
        md5 = hashlib.md5
        from_bytes = int.from_bytes
        bisect_left = bisect.bisect_left
        found = []
        for key in keys:
            start = bisect_left(tokens, from_bytes(md5(key).digest(), "big") % size)
            nodes = walks[start]
            found.append(walk_from(start, n) if nodes is None else nodes)
        return found

    def replica_sets(self, keys: Sequence[bytes], n: int) -> list[list[str]]:
        """
        The nodes of each of C{keys}'s L{preference_list}, in no particular
        order (what a write needs): with no more nodes than C{n}, every key's
        are all the nodes, one list object, and no key is hashed.
        """
        if len(self._everyone) <= n:
            return [self._everyone] * len(keys)
        return self.preference_lists(keys, n)

    def _walks_of(self, n: int) -> list[Optional[list[str]]]:
        walks = self._walks.get(n)
        if walks is None:
            # a start index may be len(_tokens): past the last token, it wraps
            walks = self._walks[n] = [None] * (len(self._tokens) + 1)
        return walks

    def _walk_from(self, start: int, n: int) -> list[str]:
        walks = self._walks_of(n)
        cached = walks[start]
        if cached is not None:
            return cached
        n = min(n, len(self.nodes))
        found: list[str] = []
        count = len(self._tokens)
        for i in range(count):
            node = self._owners[(start + i) % count]
            if node not in found:
                found.append(node)
                if len(found) == n:
                    break
        # one list object per distinct list: callers may group keys by it
        found = self._lists.setdefault(tuple(found), found)
        walks[start] = found
        return found

    def arcs(self, n: int) -> list[tuple[int, int, list[str]]]:
        """
        Every token's range of positions and the C{n} nodes that hold the
        keys in it: C{(first, token, nodes)}, in ring order. The range runs
        from C{first} to C{token} inclusive, wrapping past the end of the
        ring; the first of C{nodes} owns the token.
        """
        arcs = []
        count = len(self._tokens)
        for i, token in enumerate(self._tokens):
            previous = self._tokens[i - 1] if count > 1 else token
            arcs.append(((previous + 1) % self.ring_size, token, self._walk_from(i, n)))
        return arcs

    def ownership(self, n: int) -> dict[str, float]:
        """
        The share of the keys each node holds a copy of, with C{n} replicas
        (Cassandra's "effective ownership"): the shares add up to C{n}, or
        to the number of nodes when there are fewer.
        """
        share = dict.fromkeys(self.nodes, 0.0)
        for first, token, nodes in self.arcs(n):
            width = (token - first) % self.ring_size + 1
            for node in nodes:
                share[node] += width / self.ring_size
        return share

    def primary_share(self) -> dict[str, float]:
        """
        The share of ring positions each node is primary for.
        """
        share = dict.fromkeys(self.nodes, 0.0)
        count = len(self._tokens)
        for i, token in enumerate(self._tokens):
            previous = self._tokens[i - 1] if i else self._tokens[-1] - self.ring_size
            share[self._owners[i]] += (token - previous) / self.ring_size
        if count == 1:
            share[self._owners[0]] = 1.0
        return share

    def tokens(self) -> Sequence[tuple[int, str]]:
        """
        Every token with its owner, in ring order.
        """
        return list(zip(self._tokens, self._owners))
