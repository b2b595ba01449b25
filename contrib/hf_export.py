"""Export Hugging Face GPT2 / BERT to ONNX at any size, with random seeded weights.

Needs the ``export`` extra (torch CPU, transformers, onnxscript; onnxruntime for the
reference outputs). Uses torch's dynamo exporter (opset 18, static shapes, weights inside
the file): the legacy TorchScript exporter fails on GPT2 with transformers 5.

Every parameter is randomized — biases and layer-norm shifts too, since zero biases get
folded away by exporters and compilers and hide bugs.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ModelConfig:
    """The sizes of a tiny (or not so tiny) transformer; names follow the papers."""

    kind: str  # "gpt2" or "bert"
    layers: int = 2
    hidden: int = 64
    heads: int = 4
    ffn: int = 128
    vocab: int = 128
    positions: int = 64
    seq: int = 16
    batch: int = 1
    seed: int = 0

    @property
    def name(self) -> str:
        return f"{self.kind}_l{self.layers}_h{self.hidden}_a{self.heads}_s{self.seq}"


GPT2_SMALL = ModelConfig("gpt2", layers=12, hidden=768, heads=12, ffn=3072, vocab=50257, positions=1024, seq=128)
BERT_BASE = ModelConfig("bert", layers=12, hidden=768, heads=12, ffn=3072, vocab=30522, positions=512, seq=128)


def _require_export_extra():
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "exporting models needs the 'export' extra: pip install -e '.[export]' "
            f"(missing: {err.name})"
        ) from err


def _randomize(model, seed: int) -> None:
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            noise = torch.randn(param.shape, generator=gen, dtype=param.dtype)
            if "LayerNorm.weight" in name or name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                param.copy_(1.0 + 0.1 * noise)  # keep normalization scales near one
            else:
                param.copy_(0.1 * noise)


def build_torch_model(cfg: ModelConfig):
    """The transformers model (eval mode, random weights) wrapped to return plain tensors."""
    _require_export_extra()
    import torch
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

    if cfg.kind == "gpt2":
        hf = GPT2LMHeadModel(
            GPT2Config(
                n_layer=cfg.layers, n_embd=cfg.hidden, n_head=cfg.heads, n_inner=cfg.ffn,
                vocab_size=cfg.vocab, n_positions=cfg.positions,
            )
        )

        class Wrapper(torch.nn.Module):
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, input_ids):
                return self.model(input_ids=input_ids, use_cache=False).logits

    elif cfg.kind == "bert":
        hf = BertModel(
            BertConfig(
                num_hidden_layers=cfg.layers, hidden_size=cfg.hidden, num_attention_heads=cfg.heads,
                intermediate_size=cfg.ffn, vocab_size=cfg.vocab, max_position_embeddings=cfg.positions,
            )
        )

        class Wrapper(torch.nn.Module):
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask):
                out = self.model(input_ids=input_ids, attention_mask=attention_mask)
                return out.last_hidden_state, out.pooler_output

    else:
        raise ValueError(f"unknown model kind {cfg.kind!r}; expected 'gpt2' or 'bert'")
    _randomize(hf, cfg.seed)
    return Wrapper(hf.eval()).eval()


def example_inputs(cfg: ModelConfig) -> dict[str, np.ndarray]:
    """Token ids (and for BERT a padding mask hiding the last quarter of the sequence)."""
    rng = np.random.default_rng(cfg.seed + 1)
    inputs = {"input_ids": rng.integers(0, cfg.vocab, (cfg.batch, cfg.seq)).astype("int64")}
    if cfg.kind == "bert":
        mask = np.ones((cfg.batch, cfg.seq), "int64")
        mask[:, cfg.seq - max(1, cfg.seq // 4):] = 0
        inputs["attention_mask"] = mask
    return inputs


def output_names(cfg: ModelConfig) -> list[str]:
    return ["logits"] if cfg.kind == "gpt2" else ["last_hidden_state", "pooler_output"]


def export_onnx(cfg: ModelConfig, path: str | os.PathLike) -> Path:
    """Export ``cfg`` to ``path`` with the dynamo exporter; returns the path."""
    import torch

    model = build_torch_model(cfg)
    inputs = example_inputs(cfg)
    args = tuple(torch.from_numpy(v) for v in inputs.values())
    program = torch.onnx.export(
        model, args, dynamo=True, opset_version=18, external_data=False,
        input_names=list(inputs), output_names=output_names(cfg), verbose=False,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path))
    return path


def onnxruntime_outputs(path: str | os.PathLike, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Reference outputs, one thread (the same setting benchmarks compare against)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, inputs)


def config_dict(cfg: ModelConfig) -> dict:
    return asdict(cfg)
