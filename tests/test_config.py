"""
Tests for dhtwisted.config: the shipped etc/node.ini, and the one-line
errors a user sees for a bad file, a bad value or a bad command-line option.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from dhtwisted.config import (
    SCHEMA,
    Address,
    ConfigError,
    config_from_file,
    config_from_string,
    default_config,
    override,
)

NODE_INI = os.path.join(os.path.dirname(__file__), "..", "etc", "node.ini")

SOURCE = "my.ini"


def ini_entries(text: str) -> list[tuple[str, str, str, str]]:
    """
    The C{(section, key, value, line above)} of every key line of an ini text.
    """
    entries = []
    section = ""
    previous = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            entries.append((section, key.strip(), value.strip(), previous))
        previous = line
    return entries


class TempDirMixin:
    """
    A fresh temporary folder per test, removed afterwards.
    """

    def make_dir(self) -> str:
        path = tempfile.mkdtemp(prefix="dhtwisted-test-")
        self.addCleanup(shutil.rmtree, path, True)  # type: ignore[attr-defined]
        return path

    def write(self, data: bytes, name: str = "node.ini") -> str:
        path = os.path.join(self.make_dir(), name)
        with open(path, "wb") as f:
            f.write(data)
        return path


class ShippedFileTests(SynchronousTestCase):
    """
    etc/node.ini documents every setting with its default.
    """

    def setUp(self) -> None:
        with open(NODE_INI, encoding="utf-8") as f:
            self.text = f.read()
        self.entries = ini_entries(self.text)

    def test_equals_defaults(self) -> None:
        """Starting a node with the shipped file gives the built-in defaults."""
        config = config_from_file(NODE_INI)
        self.assertEqual(config.source, NODE_INI)
        self.assertEqual(dataclasses.replace(config, source="x"),
                         dataclasses.replace(default_config(), source="x"))

    def test_every_key_documented(self) -> None:
        """Each SCHEMA key appears once, in its section, with its default and its comment above."""
        found = {(section, key): (value, above) for section, key, value, above in self.entries}
        for setting in SCHEMA:
            where = (setting.section, setting.name)
            self.assertIn(where, found, f"[{setting.section}] {setting.name} missing")
            value, above = found[where]
            self.assertEqual(value, setting.default, where)
            self.assertEqual(above, "# " + setting.doc, where)
        keys = [(section, key) for section, key, _, _ in self.entries]
        self.assertEqual(len(keys), len(set(keys)), "a key is written twice")

    def test_no_unknown_keys(self) -> None:
        """The shipped file holds no key that SCHEMA does not know."""
        known = {(s.section, s.name) for s in SCHEMA}
        for section, key, _, _ in self.entries:
            self.assertIn((section, key), known)
        self.assertEqual(len(self.entries), len(SCHEMA))

    def test_default_sources(self) -> None:
        """Built-in defaults name themselves as such and are valid."""
        config = default_config()
        self.assertEqual(config.source, "(defaults)")
        config.check()
        self.assertEqual(config.listen, Address("127.0.0.1", 9000))
        self.assertEqual(config.seeds, ())
        self.assertIsNone(config.advertise)


class ErrorTests(SynchronousTestCase):
    """
    Every bad file or value stops the node with one line naming file, section and key.
    """

    def assertConfigError(self, text: str, section: str, key: str = "") -> str:
        """
        Reading C{text} fails with one line that starts with the file, the
        section and the key; return the message.
        """
        try:
            config_from_string(text, SOURCE)
        except ConfigError as e:
            message = str(e)
        else:
            self.fail(f"no ConfigError for {text!r}")
        self.assertNotIn("\n", message, text)
        where = f"{SOURCE}: [{section}]" + (f" {key}" if key else "")
        self.assertTrue(message.startswith(where + ": "), f"{text!r} gave {message!r}")
        self.assertTrue(len(message) > len(where) + 2, message)
        return message

    def test_unknown_section(self) -> None:
        """An unknown section is named, with the known ones."""
        message = self.assertConfigError("[nodes]\nnode_id = a\n", "nodes")
        self.assertIn("unknown section", message)
        self.assertIn("node, cluster, ring, timers, limits", message)

    def test_default_section_unknown(self) -> None:
        """[DEFAULT] is not special: it is an unknown section too."""
        self.assertConfigError("[DEFAULT]\nreplicas = 2\n", "DEFAULT")

    def test_unknown_key(self) -> None:
        """An unknown key is named, with the keys its section knows."""
        message = self.assertConfigError("[node]\nport = 9000\n", "node", "port")
        self.assertIn("unknown key", message)
        self.assertIn("listen", message)

    def test_key_in_wrong_section(self) -> None:
        """A known key in another section than its own is unknown there."""
        self.assertConfigError("[cluster]\nring_id = 5\n", "cluster", "ring_id")

    def test_bad_int(self) -> None:
        """A non-integer where an integer is expected is refused."""
        for value in ("three", "2.5", ""):
            message = self.assertConfigError(f"[ring]\nreplicas = {value}\n", "ring", "replicas")
            self.assertIn("integer", message)

    def test_bad_float(self) -> None:
        """A duration that is not a number is refused."""
        for value in ("5s", "five", ""):
            self.assertConfigError(f"[timers]\nrpc_timeout = {value}\n", "timers", "rpc_timeout")

    def test_nan_and_infinity(self) -> None:
        """NaN and infinite durations are refused."""
        for value in ("nan", "NaN", "inf", "-inf", "1e400"):
            message = self.assertConfigError(
                f"[cluster]\nheartbeat_interval = {value}\n", "cluster", "heartbeat_interval"
            )
            self.assertIn("finite", message)

    def test_bad_size(self) -> None:
        """A size with a fraction, a sign or an unknown unit is refused."""
        for value in ("1.5MiB", "-1", "4 parsecs", "MiB", "1TiB"):
            message = self.assertConfigError(f"[limits]\nmax_key = {value}\n", "limits", "max_key")
            self.assertIn("size", message)

    def test_size_split_over_lines(self) -> None:
        """A size split over continuation lines is refused, still on one line."""
        self.assertConfigError("[limits]\nmax_key = 0\n  KiB\n", "limits", "max_key")
        self.assertConfigError("[limits]\nmax_key = 16\n  KiB\n", "limits", "max_key")

    def test_bad_address(self) -> None:
        """Addresses without a port, with a bad port or with spaces are refused."""
        cases = [
            ("node", "listen", "localhost"),
            ("node", "listen", "127.0.0.1:70000"),
            ("node", "listen", "127.0.0.1:http"),
            ("node", "listen", ":9000"),
            ("node", "listen", "[::1]"),
            ("node", "listen", "[::1\n  ]:9000"),
            ("node", "advertise", "10.0.0.1:0"),
            ("cluster", "seeds", "10.0.0.2:7001, nohost"),
        ]
        for section, key, value in cases:
            self.assertConfigError(f"[{section}]\n{key} = {value}\n", section, key)

    def test_bad_node_id(self) -> None:
        """A node id with spaces or over 64 characters is refused."""
        for value in ("a b", "x" * 65, "", "n\u00e9"):
            self.assertConfigError(f"[node]\nnode_id = {value}\n", "node", "node_id")

    def test_out_of_range(self) -> None:
        """Values below or above their range are refused, with the bound."""
        cases = [
            ("ring", "replicas", "0", "at least 1"),
            ("ring", "replicas", "17", "at most 16"),
            ("ring", "ring_size", "1", "at least 2"),
            ("node", "ring_id", "-1", "at least 0"),
            ("cluster", "gossip_fanout", "0", "at least 1"),
            ("timers", "rpc_timeout", "0", "at least 0.001"),
            ("limits", "max_frame", "2G", "at most 2147483647"),
            ("limits", "max_line", "63", "at least 64"),
        ]
        for section, key, value, bound in cases:
            message = self.assertConfigError(f"[{section}]\n{key} = {value}\n", section, key)
            self.assertIn(bound, message)

    def test_ring_id_beyond_ring(self) -> None:
        """A ring_id outside the default ring of 65536 positions is refused."""
        message = self.assertConfigError("[node]\nring_id = 70000\n", "node", "ring_id")
        self.assertIn("65536", message)
        self.assertConfigError(
            "[ring]\nring_size = 100\n[node]\nring_id = 100\n", "node", "ring_id"
        )
        config = config_from_string("[ring]\nring_size = 100\n[node]\nring_id = 99\n")
        self.assertEqual((config.ring_size, config.ring_id), (100, 99))

    def test_scheduling(self) -> None:
        """scheduling is batch unless set; normal is accepted in any case, nothing else."""
        self.assertEqual(config_from_string("").scheduling, "batch")
        self.assertEqual(config_from_string("[node]\nscheduling = Normal\n").scheduling,
                         "normal")
        message = self.assertConfigError("[node]\nscheduling = fifo\n", "node", "scheduling")
        self.assertIn("expected one of batch, normal", message)

    def test_fail_after_heartbeat(self) -> None:
        """fail_after must be longer than heartbeat_interval."""
        self.assertConfigError("[cluster]\nfail_after = 1.0\n", "cluster", "fail_after")
        self.assertConfigError(
            "[cluster]\nheartbeat_interval = 20\n", "cluster", "fail_after"
        )

    def test_remove_after_fail_after(self) -> None:
        """remove_after may not be shorter than fail_after, but may equal it."""
        self.assertConfigError("[cluster]\nremove_after = 10\n", "cluster", "remove_after")
        config = config_from_string("[cluster]\nremove_after = 15\n")
        self.assertEqual(config.remove_after, config.fail_after)

    def test_txn_timeout_rpc_timeout(self) -> None:
        """txn_timeout must be longer than rpc_timeout."""
        self.assertConfigError("[timers]\ntxn_timeout = 5.0\n", "timers", "txn_timeout")
        self.assertConfigError("[timers]\nrpc_timeout = 20\n", "timers", "txn_timeout")

    def test_max_frame_holds_value(self) -> None:
        """max_frame must hold the largest key and value plus room for the header."""
        message = self.assertConfigError("[limits]\nmax_frame = 1MiB\n", "limits", "max_frame")
        self.assertIn(str(1024 * 1024 + 4096 + 1024), message)
        config = config_from_string("[limits]\nmax_frame = 1053696\n")
        self.assertEqual(config.max_frame, 1024 * 1024 + 4096 + 1024)

    def test_replace_checks(self) -> None:
        """NodeConfig.replace applies the rules across settings again."""
        error = self.assertRaises(ConfigError, default_config().replace, fail_after=0.5)
        self.assertEqual(str(error).splitlines()[0], str(error))
        self.assertTrue(str(error).startswith("(defaults): [cluster] fail_after: "))

    def test_malformed_syntax(self) -> None:
        """Text that is not ini syntax is refused, naming the file."""
        for text in (
            "replicas = 2\n[ring]\n",
            "[ring]\nreplicas = 2\nreplicas = 3\n",
            "[ring]\n[ring]\n",
            "[ring]\nreplicas\n",
            "[ring\nreplicas = 2\n",
        ):
            error = self.assertRaises(ConfigError, config_from_string, text, SOURCE)
            message = str(error)
            self.assertNotIn("\n", message)
            self.assertTrue(message.startswith(f"{SOURCE}: not a valid ini file: "), message)


class ParseTests(SynchronousTestCase):
    """
    Values a user may write, and what the node makes of them.
    """

    def test_partial_file(self) -> None:
        """Keys left out keep their defaults; comments, also inline, are ignored."""
        config = config_from_string(
            "# a comment\n[ring]\n; another\nreplicas = 2  # two copies\n", SOURCE
        )
        self.assertEqual(config.replicas, 2)
        self.assertEqual(config.source, SOURCE)
        self.assertEqual(dataclasses.replace(config, replicas=3, source="x"),
                         dataclasses.replace(default_config(), source="x"))

    def test_key_case(self) -> None:
        """Key names are case-insensitive, as configparser makes them."""
        self.assertEqual(config_from_string("[ring]\nREPLICAS = 5\n").replicas, 5)

    def test_sizes(self) -> None:
        """Sizes take binary suffixes in any case, with or without a space."""
        parse = next(s for s in SCHEMA if s.name == "max_frame").parse
        cases = {
            "512": 512,
            "512b": 512,
            "4KiB": 4096,
            "4k": 4096,
            "16 KB": 16384,
            "1MiB": 1024**2,
            "1mb": 1024**2,
            "1M": 1024**2,
            "2G": 2 * 1024**3,
            "2gib": 2 * 1024**3,
        }
        for text, expected in cases.items():
            self.assertEqual(parse(text), expected, text)

    def test_sizes_in_file(self) -> None:
        """Size settings in a file are read as bytes."""
        config = config_from_string(
            "[limits]\nmax_key = 1kb\nmax_value = 2MiB\nmax_frame = 1G\nmax_line = 4096\n"
        )
        self.assertEqual(
            (config.max_key, config.max_value, config.max_frame, config.max_line),
            (1024, 2 * 1024**2, 1024**3, 4096),
        )

    def test_durations(self) -> None:
        """Durations are float seconds, decimals allowed."""
        config = config_from_string("[timers]\nrpc_timeout = 0.25\ntxn_timeout = 2\n")
        self.assertEqual((config.rpc_timeout, config.txn_timeout), (0.25, 2.0))
        self.assertIsInstance(config.txn_timeout, float)

    def test_seeds(self) -> None:
        """Seeds are a tuple of Address, comma-separated, over lines if needed."""
        config = config_from_string(
            "[cluster]\nseeds = 10.0.0.2:7001, 10.0.0.3:7002,\n  [fe80::1]:7003\n"
        )
        self.assertEqual(
            config.seeds,
            (Address("10.0.0.2", 7001), Address("10.0.0.3", 7002), Address("fe80::1", 7003)),
        )
        self.assertEqual(config_from_string("[cluster]\nseeds =\n").seeds, ())

    def test_ipv6(self) -> None:
        """An IPv6 address in brackets parses, and prints back the same way."""
        config = config_from_string("[node]\nlisten = [::1]:9000\nadvertise = [::1]:9001\n")
        self.assertEqual(config.listen, Address("::1", 9000))
        self.assertEqual(str(config.listen), "[::1]:9000")
        self.assertEqual(str(config.advertise), "[::1]:9001")

    def test_listen_port_zero(self) -> None:
        """listen may use port 0 (any free port)."""
        self.assertEqual(config_from_string("[node]\nlisten = 127.0.0.1:0\n").listen.port, 0)

    def test_advertise(self) -> None:
        """Peers dial advertise if set, else the listen address."""
        open_ = "[security]\nprotected_mode = no\n"
        plain = config_from_string("[node]\nlisten = 0.0.0.0:9000\n" + open_)
        self.assertIsNone(plain.advertise)
        self.assertEqual(plain.peer_address, Address("0.0.0.0", 9000))
        config = config_from_string("[node]\nlisten = 0.0.0.0:9000\nadvertise = 10.0.0.5:9000\n"
                                    + open_)
        self.assertEqual(config.peer_address, Address("10.0.0.5", 9000))


class FileTests(TempDirMixin, SynchronousTestCase):
    """
    Reading a config from disk.
    """

    def test_file_named_in_errors(self) -> None:
        """Errors in a file name its path, section and key."""
        path = self.write(b"[ring]\nreplicas = 0\n")
        error = self.assertRaises(ConfigError, config_from_file, path)
        self.assertTrue(str(error).startswith(f"{path}: [ring] replicas: "), str(error))

    def test_bom(self) -> None:
        """A file saved with a UTF-8 BOM reads."""
        path = self.write(b"\xef\xbb\xbf[node]\nnode_id = bom\n# caf\xc3\xa9\n")
        config = config_from_file(path)
        self.assertEqual(config.node_id, "bom")
        self.assertEqual(config.source, path)

    def test_missing_file(self) -> None:
        """A missing file is named."""
        path = os.path.join(self.make_dir(), "nothere.ini")
        error = self.assertRaises(ConfigError, config_from_file, path)
        self.assertTrue(str(error).startswith(f"{path}: cannot read"), str(error))
        self.assertNotIn("\n", str(error))

    def test_directory(self) -> None:
        """A folder given as the file is named."""
        path = self.make_dir()
        error = self.assertRaises(ConfigError, config_from_file, path)
        self.assertTrue(str(error).startswith(f"{path}: cannot read"), str(error))

    def test_not_utf8(self) -> None:
        """A file that is not UTF-8 is named."""
        path = self.write(b"[node]\nnode_id = caf\xe9\n")
        error = self.assertRaises(ConfigError, config_from_file, path)
        self.assertEqual(str(error), f"{path}: not UTF-8 text")


class OverrideTests(SynchronousTestCase):
    """
    Command-line options over the file.
    """

    def setUp(self) -> None:
        self.config = config_from_string("[ring]\nreplicas = 2\n", SOURCE)

    def test_applies(self) -> None:
        """Overrides change their settings and keep the others."""
        new = override(self.config, [
            ("--listen", "listen", "127.0.0.1:9001"),
            ("--ring-id", "ring_id", "7"),
            ("--id", "node_id", "n7"),
        ])
        self.assertEqual(new.listen, Address("127.0.0.1", 9001))
        self.assertEqual((new.ring_id, new.node_id, new.replicas), (7, "n7", 2))
        self.assertEqual(self.config.listen, Address("127.0.0.1", 9000))

    def test_none(self) -> None:
        """No overrides leave the config as it was."""
        self.assertEqual(override(self.config, []), self.config)

    def test_bad_value_names_option(self) -> None:
        """A bad override value is reported under the option's name."""
        error = self.assertRaises(
            ConfigError, override, self.config, [("--listen", "listen", "nope")]
        )
        self.assertTrue(str(error).startswith("--listen: "), str(error))
        self.assertIn("nope", str(error))
        self.assertNotIn("\n", str(error))

    def test_cross_rule_names_option(self) -> None:
        """An override that breaks a rule across settings is reported under the option."""
        error = self.assertRaises(
            ConfigError, override, self.config, [("--ring-id", "ring_id", "70000")]
        )
        self.assertTrue(str(error).startswith("--ring-id: "), str(error))
        self.assertIn("ring_size", str(error))

    def test_file_error_not_blamed_on_option(self) -> None:
        """A rule broken by the file alone still names the file's key, not an option."""
        config = dataclasses.replace(self.config, fail_after=0.5)
        error = self.assertRaises(
            ConfigError, override, config, [("--ring-id", "ring_id", "7")]
        )
        self.assertTrue(str(error).startswith(f"{SOURCE}: [cluster] fail_after: "), str(error))


class TombstoneRuleTests(SynchronousTestCase):
    """
    Deletes must be remembered longer than dead members are.
    """

    def test_tombstone_ttl_longer_than_remove_after(self) -> None:
        """
        tombstone_ttl at or below remove_after stops the node, naming the key.
        """
        with self.assertRaises(ConfigError) as caught:
            config_from_string("[timers]\ntombstone_ttl = 30\n", source="t.ini")
        self.assertTrue(str(caught.exception).startswith("t.ini: [timers] tombstone_ttl: "))
        config = config_from_string("[timers]\ntombstone_ttl = 31\n")
        self.assertEqual(config.tombstone_ttl, 31.0)


class MetricsListenTests(SynchronousTestCase):
    """
    C{[metrics] listen}: an endpoint string, host:port for short, or off.
    """

    def test_forms(self) -> None:
        def listen(text: str) -> str:
            return config_from_string(f"[metrics]\nlisten = {text}\n").metrics_listen

        self.assertEqual(default_config().metrics_listen, "")
        self.assertEqual(listen("tcp:9100:interface=127.0.0.1"), "tcp:9100:interface=127.0.0.1")
        self.assertEqual(listen("127.0.0.1:9100"), "tcp:9100:interface=127.0.0.1")
        self.assertEqual(listen("tcp6:9100:interface=\\:\\:1"), "tcp6:9100:interface=\\:\\:1")
        self.assertEqual(default_config().listen.port, 9000)  # [node] listen is another key

    def test_bad(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            config_from_string("[metrics]\nlisten = http://localhost:9100\n", "n.ini")
        self.assertEqual(str(caught.exception).split(": expected")[0], "n.ini: [metrics] listen")

    def test_parsed_as_twisted_does(self) -> None:
        def error(text: str) -> str:
            with self.assertRaises(ConfigError) as caught:
                config_from_string(f"[metrics]\nlisten = {text}\n")
            return str(caught.exception)

        self.assertIn("not a usable endpoint", error("tcp:notaport"))
        self.assertIn("not a usable endpoint", error("tcp:9100:bogus=1"))
        self.assertIn("port must be 0..65535", error("tcp:99999"))
        self.assertEqual(config_from_string("[metrics]\nlisten = [::1]:9100\n").metrics_listen,
                         "tcp6:9100:interface=\\:\\:1")
