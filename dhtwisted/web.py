# -*- test-case-name: tests.test_web -*-
"""
The node's HTTP endpoint (C{[metrics] listen}), served by twisted.web:

- C{/}: the status page, plain HTML, SVG and a script that redraws it
  every second from C{/status.json}; no external assets;
- C{/status.json}: the status and ring documents (L{dhtwisted.status});
- C{/metrics}: Prometheus metrics (L{dhtwisted.metrics}).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from .logs import OBSERVER
from .metrics import registry_for

if TYPE_CHECKING:  # pragma: no cover
    from .node import DHTNode

__all__ = ["status_site"]

log = Logger(observer=OBSERVER)

_PAGE = resources.files("dhtwisted").joinpath("status.html").read_bytes()
_HEADERS = {
    b"x-content-type-options": b"nosniff",
    b"cache-control": b"no-store",
}


class _Leaf(Resource):
    isLeaf = True
    content_type = b"text/plain; charset=utf-8"

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", self.content_type)
        for name, value in _HEADERS.items():
            request.setHeader(name, value)
        return self.body()

    def body(self) -> bytes:
        raise NotImplementedError


class _Page(_Leaf):
    content_type = b"text/html; charset=utf-8"

    def render_GET(self, request: Request) -> bytes:
        # the page's own script and style only; it fetches from this origin
        request.setHeader(b"content-security-policy",
                          b"default-src 'none'; script-src 'unsafe-inline'; "
                          b"style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'")
        return super().render_GET(request)

    def body(self) -> bytes:
        return _PAGE


class _StatusJSON(_Leaf):
    content_type = b"application/json"

    def __init__(self, node: "DHTNode") -> None:
        super().__init__()
        self._node = node

    def body(self) -> bytes:
        doc = {"status": self._node.status(), "ring": self._node.ring_status()}
        return json.dumps(doc, separators=(",", ":")).encode("utf-8")


class _Metrics(_Leaf):
    content_type = CONTENT_TYPE_LATEST.encode("ascii")

    def __init__(self, node: "DHTNode") -> None:
        super().__init__()
        self._registry = registry_for(node)

    def body(self) -> bytes:
        return generate_latest(self._registry)


class _QuietSite(Site):
    """
    A site that logs each request at debug level, not as an access log
    line at info.
    """

    noisy = False

    def log(self, request: Request) -> None:
        log.debug("http {method} {uri} {code}", method=request.method, uri=request.uri,
                  code=request.code)


def status_site(node: "DHTNode") -> Site:
    """
    The site of C{node}'s HTTP endpoint.
    """
    root = Resource()
    root.putChild(b"", _Page())
    root.putChild(b"status.json", _StatusJSON(node))
    root.putChild(b"metrics", _Metrics(node))
    return _QuietSite(root)
