"""Shrunk failures of the differential fuzzer (``benchmarks/fuzz.py`` writes them here).

Each file holds one spec (see ``tests/fuzz/generator.py``) and asserts that it builds and
matches llvm. A failure found and not yet fixed is marked ``xfail(strict=True)`` with the
bug in its reason; fixing the bug turns it into an XPASS failure: then drop the mark.
"""
