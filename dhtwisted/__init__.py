"""
dhtwisted: a masterless, distributed, in-memory key-value database on Twisted.
"""

__version__ = "0.1.0.dev0"
__all__ = ["__version__"]
