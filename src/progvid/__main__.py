"""`python -m progvid` (what torchrun launches)."""

from .cli import entry

entry()
