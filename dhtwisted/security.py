# -*- test-case-name: tests.test_security -*-
"""
Who may talk to a node: the cluster secrets peers prove they know (read
from a file that may change while the node runs, for rotation), the
password clients give with C{AUTH}, a limit on failed C{AUTH} attempts,
and protected mode.

Pure but for L{SecretFile}, which reads its file when asked.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Optional

__all__ = ["MIN_SECRET", "FailureLimiter", "SecretFile", "check_password", "is_loopback",
           "parse_secrets"]

#: The shortest secret accepted, in bytes.
MIN_SECRET = 16


def parse_secrets(text: str) -> list[bytes]:
    """
    The secrets of a secret file: one per line, the first the one this
    node proves with, the others also accepted from peers; blank lines and
    lines starting with C{#} are skipped.

    :raises ValueError: if there is none, or one is too short.
    """
    secrets = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        secret = line.encode("utf-8")
        if len(secret) < MIN_SECRET:
            raise ValueError(f"line {number}: a secret needs at least {MIN_SECRET} bytes")
        secrets.append(secret)
    if not secrets:
        raise ValueError("no secret in it")
    return secrets


class SecretFile:
    """
    A secret file, read again when it changes.

    :param path: the file.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._seen: Optional[bytes] = None  # the content last read

    def _bytes(self) -> bytes:
        try:
            with open(self.path, "rb") as f:
                return f.read(1 << 20)
        except OSError as e:
            raise ValueError(f"cannot read {self.path}: {e.strerror}") from None

    def read(self) -> list[bytes]:
        """
        The file's secrets now.

        :raises ValueError: if it cannot be read or holds no usable secret.
        """
        return self._parse(self._bytes())

    def _parse(self, data: bytes) -> list[bytes]:
        try:
            secrets = parse_secrets(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise ValueError(f"{self.path} is not UTF-8 text") from None
        self._seen = data
        return secrets

    def reload(self) -> Optional[list[bytes]]:
        """
        The file's secrets if its content changed since it was last read,
        else C{None}. (It is read whole each time: a swap of two lines
        keeps its size, and an edit may keep its time.)

        :raises ValueError: if it cannot be read or holds no usable secret.
        """
        data = self._bytes()
        if data == self._seen:
            return None
        return self._parse(data)


def check_password(given: bytes, expected: bytes) -> bool:
    """
    Whether a client's password is right, in time that does not depend on
    where they differ.
    """
    return hmac.compare_digest(given, expected)


class FailureLimiter:
    """
    Failed attempts allowed per host: C{burst} at once, then one more every
    C{1 / rate} seconds (a token bucket per host).

    :param burst: failures allowed in a row.
    :param rate: failures allowed per second after that.
    :param hosts: most hosts remembered; the least recently failing are
        forgotten first.
    """

    def __init__(self, burst: int = 5, rate: float = 1.0, hosts: int = 10_000) -> None:
        self._burst = burst
        self._rate = rate
        self._hosts = hosts
        self._buckets: dict[str, tuple[float, float]] = {}  # host -> (tokens, when)

    def _tokens(self, host: str, now: float) -> float:
        tokens, when = self._buckets.get(host, (float(self._burst), now))
        return min(float(self._burst), tokens + (now - when) * self._rate)

    def wait(self, host: str, now: float) -> float:
        """
        Seconds before C{host} may try again; 0 if it may now.
        """
        tokens = self._tokens(host, now)
        return 0.0 if tokens >= 1 else (1 - tokens) / self._rate

    def failed(self, host: str, now: float) -> None:
        """
        C{host} failed once more.
        """
        tokens = self._tokens(host, now) - 1
        self._buckets.pop(host, None)
        self._buckets[host] = (max(tokens, 0.0), now)
        if len(self._buckets) > self._hosts:
            del self._buckets[next(iter(self._buckets))]


def is_loopback(host: str) -> bool:
    """
    Whether C{host} (as a node listens on it) is reachable from this
    machine only.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything
