"""Entry point TVM calls at ``import tvm`` (group ``tvm.backends``).

A module of its own, importing nothing at load time, because ``import tvm_spatial``
itself imports tvm: the entry point can then run while ``tvm_spatial/__init__`` is
still half-initialized, and must not depend on it.
"""


def autoload() -> None:
    """Register the vitis_spatial target tags, pipeline hook, BYOC codegen and the XRT
    dispatcher kernel entries call in xrt mode (idempotent)."""
    import codegen_hls.xrt_runtime  # noqa: F401 - registers the dispatcher at import
    from codegen_hls.byoc import register as register_codegen

    from .pipeline import install as install_pipeline
    from .target import register_targets

    register_targets()
    install_pipeline()
    register_codegen()
