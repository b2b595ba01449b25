"""Models exported on the fly at sizes the fixtures do not cover, against onnxruntime.

Needs the ``export`` extra (torch, transformers, onnxruntime); skipped without it.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_spatial

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

from contrib.hf_export import ModelConfig, example_inputs, export_onnx, onnxruntime_outputs  # noqa: E402

CONFIGS = [
    ModelConfig("gpt2", layers=1, hidden=32, heads=2, ffn=64, vocab=100, positions=32, seq=8, seed=3),
    ModelConfig("gpt2", layers=3, hidden=48, heads=6, ffn=96, vocab=90, positions=32, seq=12, seed=4),
    ModelConfig("bert", layers=1, hidden=48, heads=3, ffn=80, vocab=70, positions=32, seq=10, seed=5),
    ModelConfig("bert", layers=3, hidden=32, heads=8, ffn=64, vocab=60, positions=32, seq=6, batch=2, seed=6),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.name}_b{c.batch}")
def test_exported_config_matches_onnxruntime(cfg, tmp_path):
    path = export_onnx(cfg, tmp_path / f"{cfg.name}.onnx")
    inputs = example_inputs(cfg)
    want = onnxruntime_outputs(path, inputs)
    ex = relax.build(tvm_spatial.frontend.from_onnx(path), target="vitis_spatial")
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](*[tvm.runtime.tensor(v) for v in inputs.values()])
    got = [got] if isinstance(got, tvm.runtime.Tensor) else list(got)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-4, atol=1e-4)
    design = tvm_spatial.design_of(ex)
    assert design.host_ops == ()
    ops = design.operator_calls()  # a layer's hardware may run once per layer
    # one fused attention per layer; with a batch of sequences (not token-major) the
    # attention operators stay one process each
    attention = "attention" if cfg.batch == 1 else "attention_scores"
    assert ops[attention] == cfg.layers and ops["residual_add"] == 2 * cfg.layers
