"""Relax passes of tvm-spatial: operator matching and partitioning for ``vitis_spatial``."""

# tvm first: importing it runs tvm-spatial's backend entry point, which imports this
# package's modules; they must not be half-imported at that moment.
import tvm  # noqa: F401

from .partition import host_operators, offloaded_functions, offloaded_regions, partition_for_vitis_spatial
from .patterns import pattern_table, supported_operators

__all__ = [
    "host_operators",
    "offloaded_functions",
    "offloaded_regions",
    "partition_for_vitis_spatial",
    "pattern_table",
    "supported_operators",
]
