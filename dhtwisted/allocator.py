# -*- test-case-name: tests.test_allocator -*-
"""
C{[node] allocator}: which memory allocator holds the node's Python objects.

Every write makes each replica drop one small record and allocate another,
and the record it drops is a random one of millions. Python's own allocator
(pymalloc) then touches the header of that record's pool, and hands out
blocks from lists threaded through freed memory, both far apart in a big
store: cache misses on every write. mimalloc keeps its free lists per
64 KiB page, with the page's bookkeeping together in its segment's header;
on 3 nodes at C{-P 16} it lets the cluster commit 5-13% more writes
(see the README, under Config file).

The allocator of a CPython process is chosen before it starts
(C{PYTHONMALLOC=malloc} with mimalloc preloaded), so the node, when asked
for mimalloc and not on it, starts itself again in place (C{execve}, which
keeps the process id) before it does anything else. Without the library it
says so and runs on Python's allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import Callable, Mapping, MutableMapping, Optional

from twisted.logger import Logger

from .config import ALLOCATORS
from .logs import OBSERVER

__all__ = ["ALLOCATORS", "MIMALLOC", "PYTHON", "current_allocator", "use_allocator"]

log = Logger(observer=OBSERVER)

#: C{[node] allocator = mimalloc}: mimalloc if the system has it;
#: C{python}: the allocator the process started with.
MIMALLOC, PYTHON = ALLOCATORS

#: Set in the environment of the process started again: it is not tried twice.
RESTARTED = "DHTWISTED_RESTARTED_FOR_ALLOCATOR"


def mimalloc_version(process: Optional[ctypes.CDLL] = None) -> Optional[str]:
    """
    The version of the mimalloc loaded in this process (C{"2.0.9"}), or
    C{None} if none is.
    """
    process = process if process is not None else ctypes.CDLL(None)
    try:
        version = process.mi_version
    except AttributeError:
        return None
    version.restype = ctypes.c_int
    number = version()  # major * 100 + minor * 10 + patch
    return f"{number // 100}.{number // 10 % 10}.{number % 10}"


def current_allocator(environ: Mapping[str, str] = os.environ,
                      process: Optional[ctypes.CDLL] = None) -> str:
    """
    What allocates this process's Python objects, as C{INFO}'s
    C{mem_allocator} says: C{mimalloc-2.0.9}; C{malloc} (the C library's,
    or whichever another preload put in its place); or C{pymalloc}.
    """
    if environ.get("PYTHONMALLOC", "") not in ("malloc", "malloc_debug") or (
            sys.flags.ignore_environment):
        return "pymalloc"
    version = mimalloc_version(process)
    return f"mimalloc-{version}" if version else "malloc"


def use_allocator(
    name: str,
    environ: MutableMapping[str, str] = os.environ,
    find: Callable[[], Optional[str]] = lambda: ctypes.util.find_library("mimalloc"),
    execve: Callable[[str, list[str], dict[str, str]], None] = os.execve,
    process: Optional[ctypes.CDLL] = None,
    pid: Optional[int] = None,
    ignore_environment: Optional[bool] = None,
) -> None:
    """
    Run this process on the allocator C{name} (one of L{ALLOCATORS}):
    for mimalloc, unless it already runs on it, start it again in place
    with mimalloc preloaded. Called on twistd's main thread before the node
    is built, so that nothing is lost but the work of starting.

    An allocator the operator chose (C{PYTHONMALLOC} other than C{malloc},
    or another allocator in C{LD_PRELOAD}) is kept.

    :param find: the mimalloc library's name, or C{None} if there is none.
    :param execve: replaces the process (L{os.execve}).
    :param pid: this process's id (L{os.getpid}).
    :param ignore_environment: whether Python ignores C{PYTHON*} variables
        (C{-E} or C{-I}; from C{sys.flags} if not given).
    """
    if name not in ALLOCATORS:
        raise ValueError(f"unknown allocator {name!r}")
    pid = os.getpid() if pid is None else pid
    # (the marker goes: a process that copies this environment is a new start)
    restarted = environ.pop(RESTARTED, None) == str(pid)
    if name == PYTHON or current_allocator(environ, process).startswith(MIMALLOC):
        return
    if restarted:
        log.warn("allocator = mimalloc: started again with it, but it is not loaded "
                 "(LD_PRELOAD={preload!r}); the node runs on {allocator}",
                 preload=environ.get("LD_PRELOAD", ""),
                 allocator=current_allocator(environ, process))
        return
    if sys.flags.ignore_environment if ignore_environment is None else ignore_environment:
        log.warn("allocator = mimalloc: Python runs with -E or -I, which ignore "
                 "PYTHONMALLOC; the node runs on Python's allocator")
        return
    chosen = environ.get("PYTHONMALLOC", "")
    preloaded = [path for path in environ.get("LD_PRELOAD", "").replace(":", " ").split()
                 if "malloc" in os.path.basename(path)]
    if chosen not in ("", "malloc") or preloaded:
        log.info("allocator = mimalloc: the node keeps the allocator it was started with "
                 "(PYTHONMALLOC={chosen!r}, LD_PRELOAD={preload!r})",
                 chosen=chosen, preload=environ.get("LD_PRELOAD", ""))
        return
    library = find()
    if library is None:
        log.warn("allocator = mimalloc: no mimalloc library on this system (on Debian "
                 "and Ubuntu: apt install libmimalloc2.0); the node runs on Python's "
                 "allocator")
        return
    env = dict(environ)
    env["PYTHONMALLOC"] = "malloc"
    env["LD_PRELOAD"] = " ".join(filter(None, [library, environ.get("LD_PRELOAD", "")]))
    env[RESTARTED] = str(pid)  # (execve keeps the process id)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        execve(sys.executable, list(sys.orig_argv), env)
    except OSError as e:
        log.warn("allocator = mimalloc: could not start again ({why}); the node runs on "
                 "Python's allocator", why=e.strerror or str(e))
