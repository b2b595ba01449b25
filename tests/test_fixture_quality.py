"""The committed BERT/GPT2 fixtures (prefill and KV-cache decode) through the same quality
gates as the bundled examples: strict -Werror compile of every kernel, emulation under
ASan+UBSan against onnxruntime's stored outputs, and byte-identical rebuilds."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_generated_cpp import (
    SANITIZER_REPORTS,
    _compile,
    _explain,
    _run_sanitized,
    _strict_kernel_args,
)
from tvm import relax

import tvm_spatial

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_NAMES = ("bert_tiny", "gpt2_tiny")
OK_MARKER = "SANITIZED-FIXTURES-MATCH-ONNXRUNTIME"


def _design(name: str):
    mod = tvm_spatial.frontend.from_onnx(FIXTURES / f"{name}.onnx")
    return tvm_spatial.design_of(relax.build(mod, target="vitis_spatial"))


@pytest.mark.parametrize("name", [*FIXTURE_NAMES, "gpt2_tiny_decode"])
def test_fixture_kernels_compile_with_werror(name, tmp_path):
    design = _design(name)
    (tmp_path / design.COMMON_HEADER_NAME).write_text(design.common_header)
    for kernel in design.kernels:
        source = tmp_path / kernel.filename
        source.write_text(kernel.source)
        proc = _compile(_strict_kernel_args(source), tmp_path)
        assert proc.returncode == 0 and not proc.stderr, proc.stderr[-4000:]


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_builds_are_byte_identical(name):
    assert _design(name).to_json() == _design(name).to_json()


FIXTURES_CHILD = f"""
    import sys
    from pathlib import Path
    import numpy as np
    import tvm
    from tvm import relax
    import tvm_spatial

    fixtures = Path({str(FIXTURES)!r})
    for name in sys.argv[1:]:
        data = np.load(fixtures / f"{{name}}.npz")
        inputs = [data[k] for k in data.files if k.startswith("in:")]
        wants = [data[k] for k in data.files if k.startswith("out:")]
        ex = relax.build(tvm_spatial.frontend.from_onnx(fixtures / f"{{name}}.onnx"), target="vitis_spatial")
        vm = relax.VirtualMachine(ex, tvm.cpu(), memory_cfg="naive")  # exact-size buffers for ASan
        out = vm["main"](*[tvm.runtime.tensor(v) for v in inputs])
        outs = [out] if isinstance(out, tvm.runtime.Tensor) else list(out)
        assert len(outs) == len(wants), name
        for got, want in zip(outs, wants):
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-4, err_msg=name)
        print("checked", name, flush=True)
    print("{OK_MARKER}", flush=True)
"""


def test_fixture_emulation_runs_clean_under_sanitizers(tmp_path):
    proc = _run_sanitized(FIXTURES_CHILD, tmp_path, *FIXTURE_NAMES)
    for report in SANITIZER_REPORTS:
        assert report not in proc.stderr, _explain(proc)
    assert proc.returncode == 0, _explain(proc)
    assert OK_MARKER in proc.stdout, _explain(proc)
    for name in FIXTURE_NAMES:
        assert f"checked {name}" in proc.stdout, _explain(proc)
    objects = list((tmp_path / "cache").glob("*.o"))
    assert objects and all(b"__asan_" in o.read_bytes() for o in objects), objects
