"""Every exception the project raises on purpose, in one place.

Why one module: users catch ``tvm_spatial.SpatialError`` (or a precise subclass) and
the CLI turns any of them into one clear line. Each message names the culprit (the
operator, buffer, kernel, device or path) and says what to do about it.
"""

from __future__ import annotations


class SpatialError(Exception):
    """Base class of all tvm-spatial errors."""


class UnsupportedOperatorError(SpatialError):
    """An operator cannot be mapped to an HLS kernel."""


class DynamicShapeError(SpatialError):
    """A tensor dimension is symbolic; spatial designs need static shapes."""


class UnknownDeviceError(SpatialError):
    """The requested FPGA card is not in the device data file."""


class OutputDirError(SpatialError):
    """The output directory is unwritable, or not empty and ``force`` was not given."""


class ToolchainError(SpatialError):
    """A host tool (C++ compiler, Xilinx headers, XRT) is missing or failed."""


class EmulationError(SpatialError):
    """The emulated kernel was called with arguments that do not match its interface."""


class DesignNotFoundError(SpatialError):
    """A built module or library carries no vitis_spatial design."""


class LintError(SpatialError):
    """A generated kernel breaks a synthesizability rule; the message names kernel, line, rule."""


class CodegenError(SpatialError):
    """The TIR of an offloaded function contains a construct the HLS printer cannot express."""


class ModelImportError(SpatialError):
    """A model file is missing, unreadable, corrupt, or uses an operator the importer lacks."""


class SpatialScheduleError(SpatialError):
    """A customization primitive was applied to a loop, sblock or buffer it cannot apply to.

    Exported as ``ScheduleError`` too. The class is not *named* ScheduleError because
    errors register with TVM's FFI by class name, and "ScheduleError" is TVM's own
    (``tvm.s_tir.ScheduleError``): registering ours would hijack it."""


ScheduleError = SpatialScheduleError


class InterfaceMismatchError(SpatialScheduleError):
    """A call passes a buffer whose interface type (dtype, shape, partition, stream-ness)
    differs from the callee's parameter."""


class ResourceBudgetError(SpatialError):
    """A design does not fit its card: a tensor larger than the off-chip memory, or a
    kernel over the device's DSP/BRAM/URAM/LUT budget. The message names the kernel or
    tensor and the resource, with the amount needed and the amount the card has."""


class TokenSplitError(SpatialError):
    """A prefill cannot be split by tokens into token-parallel engines
    (``relax_passes.token_split``): an operator that mixes tokens, a bidirectional
    attention; the message names it and why."""


class UsageError(SpatialError):
    """Bad command-line input: a model that is neither a file nor a bundled example, a
    malformed ``--shape``, an option that does not apply to the command."""


def _register_with_ffi() -> None:
    """Let our errors cross TVM's FFI boundary with their type intact: passes run inside
    C++ (``relax.build`` -> pipeline -> our pass), and an unregistered Python exception
    would come back out as a plain ``RuntimeError``."""
    import tvm_ffi
    from tvm_ffi import core

    pending = [SpatialError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        owner = core.ERROR_NAME_TO_TYPE.get(cls.__name__)
        if owner is not None and not issubclass(owner, SpatialError):
            # the FFI maps errors by class name: never take over a name TVM already uses
            raise RuntimeError(f"tvm-spatial error class {cls.__name__} would shadow {owner!r}; rename it")
        tvm_ffi.register_error(cls.__name__, cls)


_register_with_ffi()


# Generation (tvm_spatial.generate). Defined after _register_with_ffi's call above, so they
# register here; each is raised in Python, before any design runs.


class GenerationError(SpatialError):
    """Bad input to greedy generation with prefill/decode designs."""


class ContextLengthError(GenerationError):
    """A prompt (plus the tokens to generate) needs more positions than the compiled
    context, i.e. the decode design's cache slots; the message names the limit."""


class VocabularyError(GenerationError):
    """A token id lies outside the model's vocabulary; the message names its size."""


class KVCacheInterfaceError(GenerationError):
    """A decode model lacks the past key/value cache inputs (or a prefill model the cache
    outputs), or the two models' caches disagree; the message names what was expected."""


_register_with_ffi()
