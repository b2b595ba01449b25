"""The fixed-seed differential fuzz set that CI runs: random Relax graphs (and random ONNX
graphs imported with ``from_onnx``) over the supported operators, built for
``vitis_spatial`` and for ``llvm``, run on the same data, compared.

The cases run in two worker processes, several to a build (see ``runner.py``); each case is
still its own test item, and a failing one says how to reproduce and shrink it::

    .venv/bin/python benchmarks/fuzz.py --replay relax:17

Bigger runs: ``benchmarks/fuzz.py --cases 1000``.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from .differential import run_case
from .runner import Case, run_cases

RELAX_CASES = 200
ONNX_CASES = 40
CASES = [Case("relax", s) for s in range(RELAX_CASES)] + [Case("onnx", s) for s in range(ONNX_CASES)]


@pytest.fixture(scope="module")
def outcomes():
    workers = max(1, min(2, os.cpu_count() or 1))
    return run_cases(CASES, workers=workers, batch=6)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_vitis_spatial_matches_llvm(outcomes, case):
    outcome = outcomes[case]
    assert outcome.kind == "pass", (
        f"{case}: {outcome.kind}: {outcome.detail}\n"
        f"reproduce and shrink: .venv/bin/python benchmarks/fuzz.py --replay {case}"
    )


def test_the_set_covers_the_operator_table(outcomes):
    """Every operator of the pattern table appears in some case of the fixed set, and the
    relax cases were offloaded (a host fallback there is only the deliberate ``HOST_OP``)."""
    from relax_passes.patterns import SINGLE_OPS

    from .generator import HOST_OP, generate

    seen: set[str] = set()
    for case in CASES:
        seen.update(node["op"] for node in case.spec()["nodes"])
    table = {op.replace("nn.", "") for op, _ in SINGLE_OPS}
    assert not table - seen, f"the generator never uses {sorted(table - seen)}: add a rule to generator.py"
    assert HOST_OP not in table, f"{HOST_OP} is offloaded now: pick another host-island operator"
    for case in CASES:
        if case.frontend == "relax":
            host = [h for h in outcomes[case].host_ops if not h.startswith(f"relax.{HOST_OP} ")]
            assert host == [], (case, host)
    assert generate(0) == generate(0)  # deterministic


def _seeded_bug(monkeypatch, old: str, new: str) -> None:
    """Make the codegen print ``new`` where it prints ``old`` (after the real printer ran)."""
    import codegen_hls.byoc as byoc

    real = byoc.build_design

    def broken(*args, **kwargs):
        design = real(*args, **kwargs)
        kernels = tuple(dataclasses.replace(k, source=k.source.replace(old, new)) for k in design.kernels)
        return dataclasses.replace(design, kernels=kernels)

    monkeypatch.setattr(byoc, "build_design", broken)


SPEC = {
    "frontend": "relax",
    "seed": 1,
    "inputs": [{"name": "x", "shape": [3, 4], "dtype": "float32", "lo": -2.0, "hi": 2.0, "step": None}],
    "nodes": [
        {"op": "exp", "args": ["x"], "outs": ["e"], "attrs": {}},
        {"op": "softmax", "args": ["x"], "outs": ["s"], "attrs": {"axis": -1}},
    ],
    "outputs": ["e", "s"],
}


@pytest.mark.parametrize("old, new", [("std::exp(", "std::exp2("), ("std::exp(", "0.5f * std::exp(")])
def test_the_harness_catches_a_seeded_codegen_bug(monkeypatch, tmp_path, old, new):
    """The comparison is not vacuous: a wrong kernel is reported as a mismatch."""
    assert run_case(SPEC).kind == "pass"
    monkeypatch.setenv("TVM_SPATIAL_CACHE_DIR", str(tmp_path))
    _seeded_bug(monkeypatch, old, new)
    outcome = run_case(SPEC)
    assert outcome.kind == "mismatch", outcome
