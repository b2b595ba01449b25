"""TIR -> Vitis HLS C++, the Vitis project writer, and the runtime modules (emulation, XRT).

Where things live: ``printer`` turns one TIR PrimFunc into an HLS function;
``kernel`` turns one offloaded Relax function into a complete kernel source;
``byoc`` is the ``relax.ext.vitis_spatial`` entry; ``emulation`` compiles the same
source for the host; ``project`` writes the Vitis project.
"""

# tvm first: importing it runs tvm-spatial's backend entry point, which imports this
# package's modules; they must not be half-imported at that moment.
import tvm  # noqa: F401

