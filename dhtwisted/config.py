# -*- test-case-name: tests.test_config -*-
"""
The node's settings: an ini file (``etc/node.ini``) read into a frozen,
validated L{NodeConfig}.

Every setting is declared once, in L{SCHEMA}, with its section, type, default
and range. Unknown sections or keys, bad types and out-of-range values raise
L{ConfigError}, whose message names the file, the section and the key on one
line, so that ``twistd`` can print it and stop before the node starts.
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional

from .logs import LEVELS
from .security import MIN_SECRET, SecretFile, is_loopback

__all__ = [
    "Address",
    "ConfigError",
    "NodeConfig",
    "SCHEMA",
    "config_from_file",
    "config_from_string",
    "parse_address",
    "valid_node_id",
]


class ConfigError(Exception):
    """
    A setting is unknown, of the wrong type or out of range.

    :param message: what is wrong, for a person.
    :param where: where the bad value came from, e.g. C{"etc/node.ini: [timers]
        rpc_timeout"} or C{"--listen"}.
    """

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(message, where)
        self.message = message
        self.where = where

    def __str__(self) -> str:
        if self.where:
            return f"{self.where}: {self.message}"
        return self.message


@dataclass(frozen=True, order=True)
class Address:
    """
    A TCP address, host and port.
    """

    host: str
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


_NODE_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_SIZE = re.compile(r"^\s*(\d+)[ \t]*(|b|k|kb|kib|m|mb|mib|g|gb|gib)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def valid_node_id(text: str) -> bool:
    """
    Whether C{text} is a node id: 1 to 64 letters, digits, '.', '_' or '-'.
    """
    return _NODE_ID.match(text) is not None


def parse_address(text: str, allow_port_zero: bool = False) -> Address:
    """
    Parse C{host:port} (or C{[v6host]:port}).

    :raises ValueError: with a message for a person.
    """
    text = text.strip()
    m = re.match(r"^\[([^\]\s]+)\]:(\d+)$", text) or re.match(r"^([^:\s]+):(\d+)$", text)
    if m is None:
        raise ValueError(f"expected host:port, got {text!r}")
    port = int(m.group(2))
    low = 0 if allow_port_zero else 1
    if not low <= port <= 65535:
        raise ValueError(f"port must be {low}..65535, got {port}")
    return Address(m.group(1), port)


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("yes", "true", "on", "1"):
        return True
    if value in ("no", "false", "off", "0"):
        return False
    raise ValueError(f"expected yes or no, got {text!r}")


def _parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"expected an integer, got {text!r}") from None


def _parse_float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"expected a finite number of seconds, got {text!r}")
    return value


def _parse_size(text: str) -> int:
    m = _SIZE.match(text)
    if m is None:
        raise ValueError(f"expected a size in bytes such as 1048576 or 1MiB, got {text!r}")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2)[:1].lower()]


def _parse_node_id(text: str) -> str:
    value = text.strip()
    if not _NODE_ID.match(value):
        raise ValueError(
            f"expected 1 to 64 letters, digits, '.', '_' or '-', got {text!r}"
        )
    return value


def _parse_seeds(text: str) -> tuple[Address, ...]:
    return tuple(parse_address(part) for part in text.split(",") if part.strip())


def _parse_optional_address(text: str) -> Optional[Address]:
    return parse_address(text) if text.strip() else None


@dataclass(frozen=True)
class Setting:
    """
    One key of the ini file.

    :ivar section: the ini section it lives in.
    :ivar name: the key, also the L{NodeConfig} attribute.
    :ivar parse: text to value; raises ValueError with a message for a person.
    :ivar default: the default, as it is written in the ini file.
    :ivar low: smallest allowed value (numbers only).
    :ivar high: largest allowed value (numbers only).
    :ivar doc: the one-line comment shipped in etc/node.ini.
    :ivar attr: the L{NodeConfig} attribute, when not C{name} (two
        sections have a C{listen}).
    """

    section: str
    name: str
    parse: Callable[[str], object]
    default: str
    doc: str
    low: Optional[float] = None
    high: Optional[float] = None
    attr: str = ""

    @property
    def field(self) -> str:
        """
        The L{NodeConfig} attribute this setting fills.
        """
        return self.attr or self.name

    def convert(self, text: str) -> object:
        """
        Parse C{text} and check its range.

        :raises ValueError: with a message for a person.
        """
        value = self.parse(text)
        if isinstance(value, (int, float)):
            if self.low is not None and value < self.low:
                raise ValueError(f"must be at least {_fmt(self.low)}, got {text.strip()}")
            if self.high is not None and value > self.high:
                    raise ValueError(f"must be at most {_fmt(self.high)}, got {text.strip()}")
        return value


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _parse_listen(text: str) -> Address:
    return parse_address(text, allow_port_zero=True)


def _parse_text(text: str) -> str:
    return text.strip()


def _parse_secret(text: str) -> str:
    value = text.strip()
    if value and len(value.encode("utf-8")) < MIN_SECRET:
        raise ValueError(f"a secret needs at least {MIN_SECRET} bytes")
    return value


def _parse_path(text: str) -> str:
    return os.path.expanduser(text.strip()) if text.strip() else ""


def _parse_choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    """
    A parser of one of C{choices}, in any case.
    """
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
        return value

    return parse


#: The values of C{[node] scheduling}.
SCHEDULING = ("batch", "normal", "inherit")

#: The values of C{[node] allocator} (see L{dhtwisted.allocator}).
ALLOCATORS = ("mimalloc", "python")


_ENDPOINT_TYPES = ("tcp", "tcp6", "unix", "ssl")


def _parse_endpoint(text: str) -> str:
    """
    A Twisted server endpoint string, C{host:port} (or C{[v6host]:port})
    for short, or empty. Parsed as Twisted will, so that a bad one stops
    the node with the key named, not when it listens.
    """
    value = text.strip()
    if not value:
        return ""
    v6 = re.match(r"^\[([^\]\s]+)\]:(\d+)$", value)
    short = re.match(r"^([^:\s\[\]]+):(\d+)$", value)
    if v6:
        escaped = v6.group(1).replace(":", "\\:")  # (a colon ends a field otherwise)
        value = f"tcp6:{v6.group(2)}:interface={escaped}"
    elif short and short.group(1) not in _ENDPOINT_TYPES:
        value = f"tcp:{short.group(2)}:interface={short.group(1)}"
    if value.split(":", 1)[0] not in _ENDPOINT_TYPES:
        raise ValueError("expected an endpoint such as tcp:9100:interface=127.0.0.1 "
                         f"(or 127.0.0.1:9100), got {text!r}")
    from twisted.internet.endpoints import serverFromString

    try:
        # (no reactor needed to parse: it is used only to listen)
        endpoint = serverFromString(None, value)
    except Exception as e:
        raise ValueError(f"not a usable endpoint ({e}): {text!r}") from None
    port = getattr(endpoint, "_port", 0)
    if isinstance(port, int) and not 0 <= port <= 65535:
        raise ValueError(f"port must be 0..65535, got {port}")
    return value


SCHEMA: tuple[Setting, ...] = (
    # [node]
    Setting("node", "node_id", _parse_node_id, "0",
            "this node's name in the cluster: letters, digits, '.', '_', '-'"),
    Setting("node", "listen", _parse_listen, "127.0.0.1:9000",
            "host:port serving both clients and peers (port 0: any free port)"),
    Setting("node", "advertise", _parse_optional_address, "",
            "host:port that peers dial to reach this node; empty: the listen address"),
    Setting("node", "ring_id", _parse_int, "0",
            "this node's first position on the ring, 0 .. ring_size - 1", low=0),
    Setting("node", "scheduling", _parse_choice(SCHEDULING), "batch",
            "the process's Linux scheduling policy: batch (when it wakes up it does not "
            "preempt other processes, so that nodes and clients sharing cores each get "
            "through more work per turn), normal (the system's default) or inherit (the "
            "one it was started with, e.g. by chrt or systemd's CPUSchedulingPolicy)"),
    Setting("node", "allocator", _parse_choice(ALLOCATORS), "mimalloc",
            "the memory allocator of the node's objects: mimalloc (if the system has it, "
            "e.g. Debian's libmimalloc2.0: the node starts itself again on it, same "
            "process id; 5-13% more writes under load) or python (the one it was "
            "started with: Python's own unless told otherwise; never restarts)"),
    # [cluster]
    Setting("cluster", "seeds", _parse_seeds, "",
            "comma-separated host:port of members to join through; empty: start a new cluster"),
    Setting("cluster", "heartbeat_interval", _parse_float, "1.0",
            "seconds between increments of this node's heartbeat", low=0.01, high=3600),
    Setting("cluster", "gossip_interval", _parse_float, "3.0",
            "seconds between gossip rounds", low=0.01, high=3600),
    Setting("cluster", "gossip_fanout", _parse_int, "3",
            "live peers each gossip round talks to", low=1, high=64),
    Setting("cluster", "fail_after", _parse_float, "15.0",
            "seconds without a heartbeat increase before a member is declared dead",
            low=0.01, high=86400),
    Setting("cluster", "remove_after", _parse_float, "30.0",
            "seconds after which a dead or departed member is forgotten", low=0.01, high=86400),
    # [ring]
    Setting("ring", "ring_size", _parse_int, "65536",
            "positions on the hash ring; a key sits at md5(key) mod ring_size",
            low=2, high=2**32),
    Setting("ring", "replicas", _parse_int, "3",
            "copies of each key (N), on the first N distinct live nodes clockwise",
            low=1, high=16),
    Setting("ring", "read_quorum", _parse_int, "1",
            "replicas a read asks at once; a missing answer also asks the next replica",
            low=1, high=16),
    Setting("ring", "vnodes", _parse_int, "1",
            "tokens per node, ring_id being the first; more tokens even out the load",
            low=1, high=256),
    # [timers]
    Setting("timers", "stabilize_interval", _parse_float, "5.0",
            "seconds between stabilization rounds that push keys to their owners",
            low=0.01, high=3600),
    Setting("timers", "full_pass_interval", _parse_float, "300.0",
            "seconds between full passes that push every record to its other owners even "
            "when nothing changed (a safety net: a membership change starts one at once)",
            low=0.01, high=7 * 86400),
    Setting("timers", "rpc_timeout", _parse_float, "5.0",
            "seconds a request to a peer may take before it counts as failed",
            low=0.001, high=600),
    Setting("timers", "txn_timeout", _parse_float, "15.0",
            "seconds after which an undecided transaction is resolved; no lock lives longer",
            low=0.01, high=3600),
    Setting("timers", "leave_timeout", _parse_float, "30.0",
            "seconds a stopping node may spend handing its keys to their new owners",
            low=0.0, high=3600),
    Setting("timers", "tombstone_ttl", _parse_float, "86400.0",
            "seconds a delete is remembered before its tombstone is collected",
            low=1.0, high=365 * 86400),
    # [limits]
    Setting("limits", "max_line", _parse_size, "8MiB",
            "longest client command line, in bytes (room for a quoted max_value)",
            low=64, high=2**31 - 1),
    Setting("limits", "max_key", _parse_size, "4KiB",
            "longest key, in bytes", low=1, high=2**31 - 1),
    Setting("limits", "max_value", _parse_size, "1MiB",
            "largest value, in bytes", low=1, high=2**31 - 1),
    Setting("limits", "max_frame", _parse_size, "16MiB",
            "largest peer message, in bytes (the reference was limited to 65535)",
            low=1024, high=2**31 - 1),
    Setting("limits", "max_clients", _parse_int, "10000",
            "client connections served at once; more are refused with an error",
            low=1, high=1_000_000),
    Setting("limits", "max_pipeline", _parse_int, "1024",
            "commands of one client in progress before the node stops reading it",
            low=1, high=1_000_000),
    # [security]
    Setting("security", "cluster_secret", _parse_secret, "",
            "a secret every member knows (at least 16 bytes): a peer link opens with a "
            "challenge-response on it, and a node without it cannot join; empty: none",
            attr="cluster_secret"),
    Setting("security", "cluster_secret_file", _parse_path, "",
            "a file of secrets instead, one per line: the first is proved, every one is "
            "accepted; read again when it changes, to rotate the secret without a restart"),
    Setting("security", "requirepass", _parse_text, "",
            "clients must send AUTH with this password before any other command; empty: "
            "no password"),
    Setting("security", "protected_mode", _parse_bool, "yes",
            "refuse to start when listening beyond this machine (not 127.0.0.1 or ::1) with "
            "neither a cluster secret nor TLS"),
    # [tls]
    Setting("tls", "ca", _parse_path, "",
            "the cluster's CA certificate (PEM): peers' and clients' certificates are "
            "checked against it; empty: no TLS", attr="tls_ca"),
    Setting("tls", "cert", _parse_path, "",
            "this node's certificate (PEM), naming <node_id>.node.dhtwisted "
            "(dht-certs makes them)", attr="tls_cert"),
    Setting("tls", "key", _parse_path, "", "this node's private key (PEM)", attr="tls_key"),
    # [log]
    Setting("log", "level", _parse_choice(LEVELS), "info",
            "least severe events logged: debug (also client connections and HTTP requests), "
            "info, warn, error or critical", attr="log_level"),
    # [metrics]
    Setting("metrics", "listen", _parse_endpoint, "",
            "where to serve Prometheus metrics (/metrics) and the status page (/), as a "
            "Twisted endpoint such as tcp:9100:interface=127.0.0.1; empty: off",
            attr="metrics_listen"),
)

_BY_KEY: dict[tuple[str, str], Setting] = {(s.section, s.name): s for s in SCHEMA}
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(s.section for s in SCHEMA))


@dataclass(frozen=True)
class NodeConfig:
    """
    The validated settings of one node. See L{SCHEMA} for what each means.
    """

    node_id: str
    listen: Address
    advertise: Optional[Address]
    ring_id: int
    scheduling: str
    allocator: str
    seeds: tuple[Address, ...]
    heartbeat_interval: float
    gossip_interval: float
    gossip_fanout: int
    fail_after: float
    remove_after: float
    ring_size: int
    replicas: int
    read_quorum: int
    vnodes: int
    stabilize_interval: float
    full_pass_interval: float
    rpc_timeout: float
    txn_timeout: float
    leave_timeout: float
    tombstone_ttl: float
    max_line: int
    max_key: int
    max_value: int
    max_frame: int
    max_clients: int
    max_pipeline: int
    cluster_secret: str = dataclasses.field(repr=False)
    cluster_secret_file: str
    requirepass: str = dataclasses.field(repr=False)
    protected_mode: bool
    tls_ca: str
    tls_cert: str
    tls_key: str
    log_level: str
    metrics_listen: str
    source: str = "(defaults)"

    def replace(self, **changes: object) -> "NodeConfig":
        """
        A copy with C{changes} applied and checked again.

        :raises ConfigError: if the result is inconsistent.
        """
        new = dataclasses.replace(self, **changes)  # type: ignore[arg-type]
        new.check()
        return new

    def check(self) -> None:
        """
        Check the rules that tie several settings together.

        :raises ConfigError: naming the setting that breaks a rule.
        """
        def fail(section: str, name: str, message: str) -> None:
            raise ConfigError(message, f"{self.source}: [{section}] {name}")

        if self.ring_id >= self.ring_size:
            fail("node", "ring_id",
                 f"must be below ring_size ({self.ring_size}), got {self.ring_id}")
        if self.read_quorum > self.replicas:
            fail("ring", "read_quorum", f"must be at most replicas ({self.replicas})")
        if self.fail_after <= self.heartbeat_interval:
            fail("cluster", "fail_after",
                 f"must be longer than heartbeat_interval ({self.heartbeat_interval})")
        if self.remove_after < self.fail_after:
            fail("cluster", "remove_after",
                 f"must be at least fail_after ({self.fail_after})")
        if self.tombstone_ttl <= self.remove_after:
            fail("timers", "tombstone_ttl",
                 f"must be longer than remove_after ({self.remove_after}): a node away "
                 "longer than a delete is remembered could bring the deleted value back")
        if self.txn_timeout <= self.rpc_timeout:
            fail("timers", "txn_timeout",
                 f"must be longer than rpc_timeout ({self.rpc_timeout})")
        if self.max_frame < self.max_value + self.max_key + 1024:
            fail("limits", "max_frame",
                 "must hold a whole key and value: at least max_value + max_key + 1024 "
                 f"= {self.max_value + self.max_key + 1024}")
        if self.cluster_secret and self.cluster_secret_file:
            fail("security", "cluster_secret_file", "set cluster_secret or "
                 "cluster_secret_file, not both")
        if self.cluster_secret_file:
            try:
                SecretFile(self.cluster_secret_file).read()
            except ValueError as e:
                fail("security", "cluster_secret_file", str(e))
        tls = (self.tls_ca, self.tls_cert, self.tls_key)
        if any(tls):
            for name, value in zip(("ca", "cert", "key"), tls):
                if not value:
                    fail("tls", name, "set ca, cert and key together, or none of them")
            if self.node_id != self.node_id.lower():
                fail("node", "node_id", "with TLS a node id is lower case: certificates name "
                     "nodes in DNS names, which ignore case")
            from .tls import TLSSettings

            try:
                TLSSettings(*tls)
            except ValueError as e:
                fail("tls", "cert", str(e))
        if (self.protected_mode and not is_loopback(self.listen.host)
                and not self.peer_secrets_set and not self.tls):
            fail("security", "protected_mode",
                 f"this node would listen on {self.listen.host}, beyond this machine, with "
                 "no cluster secret and no TLS: anyone who reaches it could join the cluster "
                 "and read or change every key. Set cluster_secret or cluster_secret_file, "
                 "or [tls], or protected_mode = no")

    @property
    def tls(self) -> bool:
        """
        Whether nodes speak TLS to each other.
        """
        return bool(self.tls_cert)

    @property
    def peer_secrets_set(self) -> bool:
        """
        Whether peers must prove they know a cluster secret.
        """
        return bool(self.cluster_secret or self.cluster_secret_file)

    @property
    def max_message(self) -> int:
        """
        The most bytes of keys and values one peer message may carry: half
        a frame, leaving room for everything else in it.
        """
        return self.max_frame // 2

    @property
    def peer_address(self) -> Address:
        """
        The address peers dial: C{advertise}, else C{listen}.
        """
        return self.advertise if self.advertise is not None else self.listen


def _build(values: Mapping[str, object], source: str) -> NodeConfig:
    config = NodeConfig(source=source, **values)  # type: ignore[arg-type]
    config.check()
    return config


def _read(parser: configparser.ConfigParser, source: str) -> NodeConfig:
    for section in parser.sections():
        if section not in SECTIONS:
            raise ConfigError(
                f"unknown section (known: {', '.join(SECTIONS)})", f"{source}: [{section}]"
            )
        for name in parser.options(section):
            if (section, name) not in _BY_KEY:
                known = ", ".join(s.name for s in SCHEMA if s.section == section)
                raise ConfigError(
                    f"unknown key (known in [{section}]: {known})",
                    f"{source}: [{section}] {name}",
                )
    values: dict[str, object] = {}
    for setting in SCHEMA:
        text = parser.get(setting.section, setting.name, fallback=setting.default)
        try:
            values[setting.field] = setting.convert(text)
        except ValueError as e:
            raise ConfigError(str(e), f"{source}: [{setting.section}] {setting.name}") from None
    return _build(values, source)


def _parser() -> configparser.ConfigParser:
    # no interpolation: a '%' in a value is just a '%'
    parser = configparser.ConfigParser(
        interpolation=None, inline_comment_prefixes=("#", ";"), default_section="\x00none"
    )
    return parser


def config_from_string(text: str, source: str = "<string>") -> NodeConfig:
    """
    Read settings from the text of an ini file.

    :param source: how to name the text in error messages.
    :raises ConfigError: if the text is not a valid configuration.
    """
    parser = _parser()
    try:
        parser.read_string(text, source=source)
    except configparser.Error as e:
        first = str(e).splitlines()[0]
        raise ConfigError(f"not a valid ini file: {first}", source) from None
    return _read(parser, source)


def config_from_file(path: str) -> NodeConfig:
    """
    Read settings from an ini file (UTF-8, a BOM is allowed).

    :raises ConfigError: if the file cannot be read or is not valid.
    """
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", path) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", path) from None
    return config_from_string(text, source=path)


def default_config() -> NodeConfig:
    """
    The settings of a node started without a config file.
    """
    return config_from_string("", source="(defaults)")


def override(config: NodeConfig, changes: Iterable[tuple[str, str, str]]) -> NodeConfig:
    """
    Apply command-line overrides to C{config}.

    :param changes: C{(option, setting name, text)} triples, such as
        C{("--listen", "listen", "127.0.0.1:9001")}.
    :raises ConfigError: naming the option whose value is bad.
    """
    values: dict[str, object] = {}
    options: dict[str, str] = {}
    for option, name, text in changes:
        setting = next(s for s in SCHEMA if s.field == name)
        try:
            values[name] = setting.convert(text)
        except ValueError as e:
            raise ConfigError(str(e), option) from None
        options[name] = option
    if not values:
        return config
    try:
        return config.replace(**values)
    except ConfigError as e:
        # a rule across settings broken by an overridden value: name the
        # option, not the file, which may not even set that key
        for name, option in options.items():
            if e.where.endswith(f"] {name}"):
                raise ConfigError(e.message, option) from None
        raise
