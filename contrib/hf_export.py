"""Export Hugging Face GPT2 / BERT to ONNX at any size, with random seeded weights.

Needs the ``export`` extra (torch CPU, transformers, onnxscript; onnxruntime for the
reference outputs). Uses torch's dynamo exporter (opset 18, static shapes, weights inside
the file): the legacy TorchScript exporter fails on GPT2 with transformers 5.

Every parameter is randomized — biases and layer-norm shifts too, since zero biases get
folded away by exporters and compilers and hide bugs.
"""

from __future__ import annotations

import inspect
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


def build_hf_model(cfg: ModelConfig):
    """The bare transformers model (``GPT2LMHeadModel`` or ``BertModel``), random seeded
    weights, eval mode: what :func:`build_torch_model` wraps, and what tests call
    ``generate`` on."""
    _require_export_extra()
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

    if cfg.kind == "gpt2":
        hf = GPT2LMHeadModel(
            GPT2Config(
                n_layer=cfg.layers, n_embd=cfg.hidden, n_head=cfg.heads, n_inner=cfg.ffn,
                vocab_size=cfg.vocab, n_positions=cfg.positions,
            )
        )
    elif cfg.kind == "bert":
        hf = BertModel(
            BertConfig(
                num_hidden_layers=cfg.layers, hidden_size=cfg.hidden, num_attention_heads=cfg.heads,
                intermediate_size=cfg.ffn, vocab_size=cfg.vocab, max_position_embeddings=cfg.positions,
            )
        )
    else:
        raise ValueError(f"unknown model kind {cfg.kind!r}; expected 'gpt2' or 'bert'")
    _randomize(hf, cfg.seed)
    return hf.eval()


def build_torch_model(cfg: ModelConfig):
    """The transformers model (eval mode, random weights) wrapped to return plain tensors."""
    _require_export_extra()
    import torch

    hf = build_hf_model(cfg)
    if cfg.kind == "gpt2":

        class Wrapper(torch.nn.Module):
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, input_ids):
                return self.model(input_ids=input_ids, use_cache=False).logits

    else:

        class Wrapper(torch.nn.Module):
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask):
                out = self.model(input_ids=input_ids, attention_mask=attention_mask)
                return out.last_hidden_state, out.pooler_output

    return Wrapper(hf).eval()


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


# ---------------------------------------------------------------------------------------
# GPT2 with an explicit key/value cache: a prefill design (seq N) and a decode design
# (one token), both with static shapes.
#
# The cache is one tensor per kind, [layers, 1, heads, max_ctx, head_dim], passed in and
# returned whole (names in tvm_spatial.generate). Decode writes the new token's key/value
# into slot ``position`` with ``where(slots == position, new, past)`` and hides the slots
# after ``position`` with an additive mask, so the graph is elementwise ops, matmuls and
# a softmax -- nothing dynamic, no scatter. Prefill runs the prompt (right-padded to N;
# causal attention makes the padding invisible to the real tokens) and returns the cache
# zero-padded to max_ctx; slots a padded prompt filled with garbage are masked by decode
# until it overwrites them. The layers are the HF model's own blocks (eager attention),
# given a small cache object whose ``update`` does the slot write.
# ---------------------------------------------------------------------------------------


def _kv_names():
    from tvm_spatial.generate import DECODE_INPUTS, OUTPUTS, PREFILL_INPUTS

    return PREFILL_INPUTS, DECODE_INPUTS, OUTPUTS


def _check_context(cfg: ModelConfig, max_ctx: int | None) -> int:
    if cfg.kind != "gpt2":
        raise ValueError(f"KV-cache export is for GPT2; got kind {cfg.kind!r}")
    if cfg.batch != 1:
        raise ValueError(f"KV-cache export is for batch 1; got batch {cfg.batch}")
    max_ctx = cfg.positions if max_ctx is None else int(max_ctx)
    if not cfg.seq <= max_ctx <= cfg.positions:
        raise ValueError(
            f"max_ctx {max_ctx} must lie between the prefill length seq={cfg.seq} and the "
            f"model's position table positions={cfg.positions}"
        )
    return max_ctx


def build_kv_model(cfg: ModelConfig, mode: str, max_ctx: int | None = None):
    """GPT2 with explicit cache tensors; ``mode`` is ``"prefill"`` (input_ids [1, seq] ->
    logits [1, seq, vocab], present_key, present_value) or ``"decode"`` (input_ids [1, 1],
    position [1], past_key, past_value -> logits [1, 1, vocab], present_key,
    present_value). Caches are [layers, 1, heads, max_ctx, head_dim] float32."""
    _require_export_extra()
    import torch

    max_ctx = _check_context(cfg, max_ctx)
    if mode not in ("prefill", "decode"):
        raise ValueError(f"mode must be 'prefill' or 'decode', not {mode!r}")
    hf = build_hf_model(cfg)
    hf.config._attn_implementation = "eager"  # plain matmul/softmax, the ops we offload
    neg = torch.finfo(torch.float32).min
    # the cache argument's name: ``cache`` from transformers 5.x, ``past_key_values`` before
    params = inspect.signature(type(hf.transformer.h[0]).forward).parameters
    cache_arg = next(n for n in ("cache", "past_key_values", "layer_past") if n in params)

    class SlotCache:
        """Duck-typed HF cache: ``update`` returns the keys/values attention should see."""

        def __init__(self, past_key=None, past_value=None, write=None):
            self.past_key, self.past_value, self.write = past_key, past_value, write
            self.keys, self.values = [], []

        def update(self, key, value, layer_idx, *_, **__):
            if self.write is None:  # prefill: attend to the prompt, hand back a padded cache
                pad = key.new_zeros(key.shape[0], key.shape[1], max_ctx - key.shape[2], key.shape[3])
                self.keys.append(torch.cat([key, pad], dim=2))
                self.values.append(torch.cat([value, pad], dim=2))
                return key, value
            key = torch.where(self.write, key, self.past_key[layer_idx])
            value = torch.where(self.write, value, self.past_value[layer_idx])
            self.keys.append(key)
            self.values.append(value)
            return key, value

    class KVWrapper(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model
            self.register_buffer("slots", torch.arange(max_ctx, dtype=torch.int64), persistent=False)
            causal = torch.full((cfg.seq, cfg.seq), neg).triu(1)
            self.register_buffer("causal", causal.view(1, 1, cfg.seq, cfg.seq), persistent=False)
            self.register_buffer("positions", torch.arange(cfg.seq, dtype=torch.int64).view(1, -1), persistent=False)

        def _run(self, input_ids, position_ids, cache, mask):
            tr = self.model.transformer
            hidden = tr.wte(input_ids) + tr.wpe(position_ids)
            for block in tr.h:
                hidden = block(hidden, **{cache_arg: cache}, attention_mask=mask)
                hidden = hidden[0] if isinstance(hidden, tuple) else hidden  # transformers < 5
            logits = self.model.lm_head(tr.ln_f(hidden))
            return logits, torch.stack(cache.keys), torch.stack(cache.values)

        def prefill(self, input_ids):
            return self._run(input_ids, self.positions, SlotCache(), self.causal)

        def decode(self, input_ids, position, past_key, past_value):
            write = (self.slots == position).view(1, 1, max_ctx, 1)
            mask = torch.where(self.slots > position, neg, 0.0).view(1, 1, 1, max_ctx)
            cache = SlotCache(past_key, past_value, write)
            return self._run(input_ids, position.view(1, 1), cache, mask)

        forward = prefill if mode == "prefill" else decode

    return KVWrapper(hf).eval()


def kv_example_inputs(cfg: ModelConfig, mode: str, max_ctx: int | None = None) -> dict[str, np.ndarray]:
    """Prefill: a random prompt of ``cfg.seq`` tokens. Decode: one token at position
    ``seq`` with a random (but finite) cache, so every slot matters to the check."""
    max_ctx = _check_context(cfg, max_ctx)
    rng = np.random.default_rng(cfg.seed + 2)
    ids = rng.integers(0, cfg.vocab, (1, cfg.seq if mode == "prefill" else 1)).astype("int64")
    if mode == "prefill":
        return {"input_ids": ids}
    shape = (cfg.layers, 1, cfg.heads, max_ctx, cfg.hidden // cfg.heads)
    return {
        "input_ids": ids,
        "position": np.array([min(cfg.seq, max_ctx - 1)], "int64"),
        "past_key": rng.standard_normal(shape).astype("float32"),
        "past_value": rng.standard_normal(shape).astype("float32"),
    }


def export_gpt2_kv(cfg: ModelConfig, path: str | os.PathLike, mode: str, max_ctx: int | None = None) -> Path:
    """Export the prefill or decode GPT2 graph of ``cfg`` (see :func:`build_kv_model`)."""
    import torch

    prefill_inputs, decode_inputs, outputs = _kv_names()
    model = build_kv_model(cfg, mode, max_ctx)
    inputs = kv_example_inputs(cfg, mode, max_ctx)
    names = list(prefill_inputs if mode == "prefill" else decode_inputs)
    assert list(inputs) == names, (list(inputs), names)
    args = tuple(torch.from_numpy(v) for v in inputs.values())
    program = torch.onnx.export(
        model, args, dynamo=True, opset_version=18, external_data=False,
        input_names=names, output_names=list(outputs), verbose=False,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path))
    return path


def export_gpt2_prefill(cfg: ModelConfig, path: str | os.PathLike, max_ctx: int | None = None) -> Path:
    return export_gpt2_kv(cfg, path, "prefill", max_ctx)


def export_gpt2_decode(cfg: ModelConfig, path: str | os.PathLike, max_ctx: int | None = None) -> Path:
    return export_gpt2_kv(cfg, path, "decode", max_ctx)


def export_gpt2_generation(
    cfg: ModelConfig, prefix: str | os.PathLike, max_ctx: int | None = None
) -> tuple[Path, Path]:
    """``<prefix>_prefill.onnx`` and ``<prefix>_decode.onnx``: what ``tvm-spatial
    generate <prefix>`` runs."""
    prefix = Path(prefix)
    return (
        export_gpt2_prefill(cfg, prefix.with_name(prefix.name + "_prefill.onnx"), max_ctx),
        export_gpt2_decode(cfg, prefix.with_name(prefix.name + "_decode.onnx"), max_ctx),
    )
