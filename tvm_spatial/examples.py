"""Bundled example models, written directly in Relax with seeded random weights.

Why in Relax and not ONNX: they need nothing beyond TVM to build, so the set-up command
and the test suite can compile them on a fresh machine. Every parameter is random
(biases too: zero biases get folded away and hide bugs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import relax


@dataclass
class Example:
    """A Relax module plus an input that exercises it."""

    name: str
    mod: object
    inputs: dict[str, np.ndarray]
    description: str


def _weight(rng, *shape, scale: float = 0.2) -> relax.Expr:
    return relax.const((rng.standard_normal(shape) * scale).astype("float32"))


def mlp(batch: int = 4, features: int = 16, hidden: int = 32, classes: int = 10, seed: int = 0) -> Example:
    """dense + bias -> relu -> dense -> softmax."""
    rng = np.random.default_rng(seed)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((batch, features), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            h = bb.emit(relax.op.add(relax.op.matmul(x, _weight(rng, features, hidden)), _weight(rng, hidden)))
            h = bb.emit(relax.op.nn.relu(h))
            h = bb.emit(relax.op.matmul(h, _weight(rng, hidden, classes)))
            out = bb.emit_output(relax.op.nn.softmax(h, axis=-1))
        bb.emit_func_output(out)
    inputs = {"x": rng.standard_normal((batch, features)).astype("float32")}
    return Example("mlp", bb.get(), inputs, f"2-layer MLP {features}->{hidden}->{classes}, batch {batch}")


def encoder_block(
    seq: int = 16, hidden: int = 64, heads: int = 4, ffn: int = 128, batch: int = 1, seed: int = 0
) -> Example:
    """A pre-LN transformer encoder block: LN -> QKV -> attention -> proj -> residual,
    LN -> FFN with GELU -> residual."""
    if hidden % heads:
        raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
    rng = np.random.default_rng(seed)
    head_dim = hidden // heads
    op = relax.op
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((batch, seq, hidden), "float32"))

    def linear(v, n_in, n_out):
        return bb.emit(op.add(op.matmul(v, _weight(rng, n_in, n_out)), _weight(rng, n_out)))

    def layer_norm(v):
        gamma = relax.const((1.0 + 0.1 * rng.standard_normal(hidden)).astype("float32"))
        return bb.emit(op.nn.layer_norm(v, gamma, _weight(rng, hidden), axes=[-1]))

    def split_heads(v):
        v = bb.emit(op.reshape(v, (batch, seq, heads, head_dim)))
        return bb.emit(op.permute_dims(v, [0, 2, 1, 3]))

    with bb.function("main", [x]):
        with bb.dataflow():
            h = layer_norm(x)
            q = split_heads(linear(h, hidden, hidden))
            k = split_heads(linear(h, hidden, hidden))
            v = split_heads(linear(h, hidden, hidden))
            scores = bb.emit(op.matmul(q, op.permute_dims(k, [0, 1, 3, 2])))
            scores = bb.emit(op.multiply(scores, relax.const(np.float32(1.0 / np.sqrt(head_dim)))))
            probs = bb.emit(op.nn.softmax(scores, axis=-1))
            ctx = bb.emit(op.matmul(probs, v))
            ctx = bb.emit(op.permute_dims(ctx, [0, 2, 1, 3]))
            ctx = bb.emit(op.reshape(ctx, (batch, seq, hidden)))
            x1 = bb.emit(op.add(x, linear(ctx, hidden, hidden)))
            h2 = layer_norm(x1)
            f = bb.emit(op.nn.gelu(linear(h2, hidden, ffn)))
            out = bb.emit_output(op.add(x1, linear(f, ffn, hidden)))
        bb.emit_func_output(out)
    inputs = {"x": rng.standard_normal((batch, seq, hidden)).astype("float32")}
    desc = f"transformer encoder block: seq {seq}, hidden {hidden}, {heads} heads, FFN {ffn}"
    return Example("encoder_block", bb.get(), inputs, desc)


EXAMPLES = {"mlp": mlp, "encoder_block": encoder_block}


def get_example(name: str) -> Example:
    try:
        return EXAMPLES[name]()
    except KeyError:
        raise ValueError(f"unknown example {name!r}; bundled examples: {', '.join(sorted(EXAMPLES))}") from None
