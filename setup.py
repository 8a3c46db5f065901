"""
Packaging for dhtwisted: the package, its twistd plugin and its console scripts.

The twisted/plugins drop-in is listed as a package of its own (it has no
__init__.py on purpose, so Twisted's plugin scan treats it as a namespace).
"""

import os
import sys

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

#: The modules of the write path, compiled to C extensions with mypyc when
#: it is at hand (pyproject.toml asks for it at build time): the same code,
#: type-checked, run without the interpreter's dispatch. Each still works
#: as plain Python: DHTWISTED_PURE=1 installs them so.
#: (tests/test_build.py checks that an install with a C compiler compiled them.)
COMPILED = ["dhtwisted/version.py", "dhtwisted/store.py", "dhtwisted/twopc.py"]


def _warn(why):
    print(f"dhtwisted: installing the pure-Python modules only: {why}", file=sys.stderr)


def compiled_modules():
    """
    The extension modules mypyc makes of L{COMPILED}; none if it is not
    installed or fails, or if DHTWISTED_PURE is 1.
    """
    if os.environ.get("DHTWISTED_PURE") == "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _warn("mypyc is not installed")
        return []
    try:
        # (no mypy config file is read; what they import is not followed,
        # its types being Any: the build does not depend on what else is
        # installed)
        return mypycify(
            ["--config-file=", "--follow-imports=skip", "--ignore-missing-imports", *COMPILED],
            opt_level="3", group_name="dhtwisted")
    except (Exception, SystemExit) as e:  # (mypy exits on a type error)
        _warn(f"mypyc failed ({e}); run mypy --follow-imports=skip "
              f"--ignore-missing-imports {' '.join(COMPILED)} to see why")
        return []


class OptionalBuildExt(build_ext):
    """
    Build the compiled modules if a C compiler can; otherwise leave all of
    them out (a module compiled without its group library cannot load)
    and keep the pure-Python ones.
    """

    def run(self):
        try:
            super().run()
        except Exception as e:
            _warn(f"the C build failed: {e}")
            for ext in self.extensions:
                path = self.get_ext_fullpath(ext.name)
                if os.path.exists(path):
                    os.remove(path)
            self.extensions = []


setup(
    name="dhtwisted",
    version="0.1.0.dev0",
    description="A masterless, distributed, in-memory key-value database on Twisted",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["dhtwisted", "dhtwisted.*"]) + ["twisted.plugins"],
    package_data={"twisted.plugins": ["dhtwisted_dht.py"], "dhtwisted": ["status.html"]},
    include_package_data=False,
    install_requires=[
        "twisted[tls]>=24.7.0",
        # the committed dhtwisted/_proto/dht_pb2.py is protoc 7.35.1 output and
        # refuses older runtimes
        "protobuf>=7.35.1",
        "service-identity>=24.1.0",
        # dht-certs: a throwaway CA and node certificates (pyOpenSSL needs it anyway)
        "cryptography>=42.0",
        # a RESP parser in C: the client commands of a read are parsed in one call
        "hiredis>=3.0",
        # the metrics endpoint: Prometheus's own exposition format and process
        # collector, rather than a hand-written copy
        "prometheus-client>=0.20",
    ],
    extras_require={
        "test": [
            "pytest>=8.0",
            "pytest-twisted>=1.14",
            "hypothesis>=6.100",
            # redis-py: the RESP tests talk to a node the way Redis users do
            "redis>=5.0",
        ],
        # exact pin: `make proto` must reproduce the committed module byte for byte
        "proto": ["grpcio-tools==1.85.1"],
        "lint": ["ruff>=0.6"],
        # the benchmark's bar chart
        "bench": ["matplotlib>=3.7"],
    },
    entry_points={
        "console_scripts": [
            "dht-client = dhtwisted.cli:client_main",
            "dhserver = dhtwisted.cli:dhserver_main",
            "dht-bench = dhtwisted.bench:main",
            "dht-admin = dhtwisted.admin:main",
            "dht-certs = dhtwisted.certs:main",
        ],
    },
    ext_modules=compiled_modules(),
    cmdclass={"build_ext": OptionalBuildExt},
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: Database",
    ],
)
