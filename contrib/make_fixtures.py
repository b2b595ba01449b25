"""Regenerate the committed ONNX fixtures and their onnxruntime reference outputs.

    python -m contrib.make_fixtures [tests/fixtures]

Each fixture is ``<name>.onnx`` plus ``<name>.npz`` holding the inputs (``in:<name>``),
onnxruntime's outputs (``out:<name>``) and the config (``config`` as JSON), so the core
test suite needs neither torch nor onnxruntime.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .hf_export import ModelConfig, example_inputs, export_onnx, onnxruntime_outputs, output_names

FIXTURES = (
    ModelConfig("gpt2", layers=2, hidden=64, heads=4, ffn=256, vocab=128, positions=64, seq=16, seed=0),
    ModelConfig("bert", layers=2, hidden=64, heads=4, ffn=128, vocab=128, positions=64, seq=16, seed=0),
)


def write_fixture(cfg: ModelConfig, directory: Path) -> Path:
    onnx_path = export_onnx(cfg, directory / f"{cfg.kind}_tiny.onnx")
    inputs = example_inputs(cfg)
    outputs = onnxruntime_outputs(onnx_path, inputs)
    arrays = {f"in:{k}": v for k, v in inputs.items()}
    arrays.update({f"out:{k}": v for k, v in zip(output_names(cfg), outputs)})
    arrays["config"] = np.array(json.dumps(cfg.__dict__, sort_keys=True))
    np.savez(directory / f"{cfg.kind}_tiny.npz", **arrays)
    return onnx_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory", nargs="?", default="tests/fixtures")
    args = parser.parse_args()
    directory = Path(args.directory)
    directory.mkdir(parents=True, exist_ok=True)
    for cfg in FIXTURES:
        print(f"wrote {write_fixture(cfg, directory)}")


if __name__ == "__main__":
    main()
