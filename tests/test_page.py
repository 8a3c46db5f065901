"""
The status page in headless Chromium (Debian's, from `make browser`)
against a real 3-node cluster: what a person opening it sees. Keeps a
screenshot in results/status-page.png.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser

from twisted.trial.unittest import SynchronousTestCase

from .procs import run_tool, wait_until
from .test_web import fetch, web_cluster

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SCREENSHOT = os.path.join(ROOT, "results", "status-page.png")


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        raise RuntimeError("chromium is missing: run the tests with `make test` "
                           "(its `browser` target installs Debian's chromium)")
    return path


class _Page(HTMLParser):
    """
    The parts of the rendered DOM the test looks at: the member rows, the
    ring's tokens and arcs, and the text of elements with an id.
    """

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.tokens: list[dict[str, str]] = []
        self.arcs: list[dict[str, str]] = []
        self.labels: list[str] = []  # the ring's token labels
        self._in_label = False
        self.text: dict[str, str] = {}
        self._in_body = False
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._ids: list[tuple[str, str]] = []  # (tag, id) of open elements with ids
        self._stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self._stack.append(tag)
        if "id" in a:
            self._ids.append((tag, a["id"]))
            self.text.setdefault(a["id"], "")
        if tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "circle" and a.get("class") == "token":
            self.tokens.append(a)
        elif tag == "path" and a.get("class") == "arc":
            self.arcs.append(a)
        elif tag == "text" and a.get("class") == "label":
            self.labels.append("")
            self._in_label = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "text":
            self._in_label = False
        if self._stack and self._stack[-1] == tag:
            self._stack.pop()
        if self._ids and self._ids[-1][0] == tag:
            self._ids.pop()
        if tag == "td" and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        elif tag == "tbody":
            self._in_body = False

    def handle_data(self, data: str) -> None:
        if self._in_label:
            self.labels[-1] += data
        if self._cell is not None:
            self._cell.append(data)
        for _, element in self._ids:
            self.text[element] += data


class StatusPageTests(SynchronousTestCase):
    """
    The page, rendered and run by Chromium.
    """

    def setUp(self) -> None:
        self.browser = chromium()
        self.profile = tempfile.mkdtemp(prefix="dht-chromium-")
        self.addCleanup(shutil.rmtree, self.profile, True)
        self.nodes, self.base, urls = web_cluster(self, "pg")
        self.url = urls[0]

    def chromium(self, *args: str) -> subprocess.CompletedProcess:
        """
        Run headless Chromium on the page (bounded), with a throwaway profile.
        """
        return subprocess.run(
            [self.browser, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars",
             f"--user-data-dir={self.profile}", "--virtual-time-budget=4000", *args, self.url],
            capture_output=True, timeout=90, stdin=subprocess.DEVNULL)

    def test_page_shows_the_cluster(self) -> None:
        """
        Once the three nodes agree, the page shows each in its table as
        alive with its address, a token on the ring for each and arcs
        owning the whole ring, the summary, a live request rate above zero
        while clients write, and that it refreshed by itself.
        """
        # writes through node 0, then a heartbeat for the rate to show
        lines = "".join(f"set page{i} v\n" for i in range(300)).encode()
        run_tool("dht-client", ["127.0.0.1", str(self.base)], lines)
        wait_until(lambda: json.loads(fetch(self.url + "status.json")[1])["status"]
                   ["members"][0]["rate"] > 0, what="node 0's rate shown")

        out = self.chromium("--dump-dom")
        self.assertEqual(out.returncode, 0, out.stderr.decode()[-2000:])
        page = _Page()
        page.feed(out.stdout.decode())
        rows = {row[0].split()[0]: row for row in page.rows}
        self.assertEqual(sorted(rows), ["pg0", "pg1", "pg2"], page.rows)
        for i in range(3):
            row = rows[f"pg{i}"]
            self.assertEqual(row[1], f"127.0.0.1:{self.base + i}")
            self.assertEqual(row[2], "alive")
            self.assertEqual(row[4], "33.3%")
        self.assertIn("(this node)", rows["pg0"][0])
        self.assertEqual(sorted(t["data-node"] for t in page.tokens), ["pg0", "pg1", "pg2"])
        self.assertEqual(sorted(int(t["data-token"]) for t in page.tokens),
                         [0, 65536 // 3, 2 * 65536 // 3])
        self.assertEqual(len(page.arcs), 3)
        self.assertEqual(sorted(page.labels), ["pg0 33.3%", "pg1 33.3%", "pg2 33.3%"])
        self.assertIn("3 members: 3 alive, 0 suspect, 0 dead, 0 left; 3 replicas; "
                      "all live members agree on the ring", page.text["summary"])
        rate = float(page.text["rate"].split()[0])
        self.assertGreater(rate, 0)
        self.assertGreaterEqual(int(page.text["refreshes"]), 2)
        self.assertEqual(page.text["error"], "")

        os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
        out = self.chromium(f"--screenshot={SCREENSHOT}", "--window-size=1400,640")
        self.assertEqual(out.returncode, 0, out.stderr.decode()[-2000:])
        with open(SCREENSHOT, "rb") as f:
            png = f.read()
        self.assertEqual(png[:8], b"\x89PNG\r\n\x1a\n")
        self.assertGreater(len(png), 10_000)
