"""Regenerate the committed ONNX fixtures and their onnxruntime reference outputs.

    python -m contrib.make_fixtures [tests/fixtures]

Each fixture is ``<name>.onnx`` plus ``<name>.npz`` holding the inputs (``in:<name>``),
onnxruntime's outputs (``out:<name>``) and the config (``config`` as JSON), so the core
test suite needs neither torch nor onnxruntime.

The generation fixture (GPT2 with a KV cache, the same weights as ``gpt2_tiny``) is
``gpt2_tiny_prefill.onnx`` + ``gpt2_tiny_decode.onnx`` + ``gpt2_tiny_generate.npz``:
onnxruntime's outputs of each graph on example inputs (``in:prefill:<name>``,
``out:decode:<name>``, ...), and for each prompt ``k`` transformers' greedy tokens
(``prompt:k``, ``tokens:k``, from ``generate(do_sample=False)``) and its logits for the
whole sequence computed without a cache (``logits:k``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .hf_export import (
    ModelConfig,
    build_hf_model,
    example_inputs,
    export_gpt2_generation,
    export_onnx,
    kv_example_inputs,
    onnxruntime_outputs,
    output_names,
)

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


GENERATION = FIXTURES[0]  # the gpt2_tiny weights
GENERATION_MAX_CTX = 32
GENERATION_NEW_TOKENS = 8
GENERATION_PROMPT_LENGTHS = (5, 16, 21, 1)  # shorter than, equal to and longer than seq 16


def greedy_reference(cfg: ModelConfig, prompt: list[int], max_new_tokens: int):
    """transformers' greedy tokens after ``prompt`` and the logits of the whole sequence
    (prompt + new tokens but the last) recomputed in one pass without a cache."""
    import torch

    model = build_hf_model(cfg)
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=0)
        new = out[0, len(prompt):].tolist()
        logits = model(out[:, :-1], use_cache=False).logits[0].numpy()
    return new, logits


def write_generation_fixture(directory: Path, cfg: ModelConfig = GENERATION) -> tuple[Path, Path]:
    prefix = directory / f"{cfg.kind}_tiny"
    paths = export_gpt2_generation(cfg, prefix, GENERATION_MAX_CTX)
    arrays = {}
    for mode, path in zip(("prefill", "decode"), paths):
        inputs = kv_example_inputs(cfg, mode, GENERATION_MAX_CTX)
        arrays.update({f"in:{mode}:{k}": v for k, v in inputs.items()})
        for name, value in zip(("logits", "present_key", "present_value"), onnxruntime_outputs(path, inputs)):
            arrays[f"out:{mode}:{name}"] = value
    rng = np.random.default_rng(cfg.seed + 3)
    for k, length in enumerate(GENERATION_PROMPT_LENGTHS):
        prompt = rng.integers(0, cfg.vocab, length).tolist()
        tokens, logits = greedy_reference(cfg, prompt, GENERATION_NEW_TOKENS)
        arrays[f"prompt:{k}"] = np.array(prompt, "int64")
        arrays[f"tokens:{k}"] = np.array(tokens, "int64")
        arrays[f"logits:{k}"] = logits
    config = dict(cfg.__dict__, max_ctx=GENERATION_MAX_CTX)
    arrays["config"] = np.array(json.dumps(config, sort_keys=True))
    np.savez(directory / f"{cfg.kind}_tiny_generate.npz", **arrays)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory", nargs="?", default="tests/fixtures")
    args = parser.parse_args()
    directory = Path(args.directory)
    directory.mkdir(parents=True, exist_ok=True)
    for cfg in FIXTURES:
        print(f"wrote {write_fixture(cfg, directory)}")
    for path in write_generation_fixture(directory):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
