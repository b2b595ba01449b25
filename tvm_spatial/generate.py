"""Greedy generation: a GPT2 prefill design and a decode design, run in emulation.

Two ONNX graphs with static shapes (``contrib.hf_export.export_gpt2_generation`` writes
them) make a generator:

- **prefill** -- ``input_ids [1, N]`` -> ``logits [1, N, vocab]``, ``present_key``,
  ``present_value``;
- **decode** -- ``input_ids [1, 1]``, ``position [1]``, ``past_key``, ``past_value`` ->
  ``logits [1, 1, vocab]``, ``present_key``, ``present_value``;

where every cache is ``[layers, 1, heads, max_ctx, head_dim]``: ``max_ctx`` is the
compiled context. :class:`Generator` builds both with ``relax.build(..., target)``
(``"vitis_spatial"`` by default: the HLS C++ runs in emulation) once, keeps the cache
between steps as the designs' own output tensors, and picks tokens by greedy argmax.

A prompt shorter than N is right-padded for prefill (causal attention keeps the padding
out of the real positions; decode masks the slots it filled until it overwrites them);
the part of a prompt longer than N is fed through decode steps. A prefill model is
optional: without one the whole prompt goes through decode.

The cache is updated in place. Built for ``vitis_spatial``, a decode design writes one new
K and V row per layer into the ``past_key`` / ``past_value`` tensors it is given and returns
those same tensors as ``present_key`` / ``present_value`` (``relax_passes.kv_inplace``:
``R.call_inplace_packed``; the kernel's cache ports are ``inout``). So a step costs no
cache copy, and after a step **the old past tensors are the new present ones**: a caller
who wants to keep a cache as it was must copy it first. :class:`Generator` never needs the
old cache: it hands each step's outputs (the same tensors) to the next step, and
:meth:`Generator.reset` / :meth:`Generator.prefill` start from fresh tensors. Under another
target (``"llvm"``) the outputs are new tensors; the loop is the same.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .errors import ContextLengthError, KVCacheInterfaceError, UsageError, VocabularyError

# The interface both graphs follow (contrib.hf_export writes it).
PREFILL_INPUTS = ("input_ids",)
DECODE_INPUTS = ("input_ids", "position", "past_key", "past_value")
OUTPUTS = ("logits", "present_key", "present_value")
CACHE_INPUTS = ("past_key", "past_value")


def _output_shapes(model) -> dict[str, list[int | None]]:
    shapes = {}
    for value in model.graph.output:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [int(d.dim_value) if d.HasField("dim_value") else None for d in dims]
    return shapes


@dataclass(frozen=True)
class Signature:
    """What generation needs to know of a model pair, read from the ONNX graphs."""

    vocab: int
    max_ctx: int
    cache_shape: tuple[int, ...]  # [layers, 1, heads, max_ctx, head_dim]
    prefill_len: int  # N; 0 without a prefill model
    decode_inputs: tuple[str, ...]  # the decode graph's input order

    @property
    def layers(self) -> int:
        return self.cache_shape[0]


def _check_decode(model, name: str) -> tuple[tuple[str, ...], tuple[int, ...], int]:
    from .frontend import input_shapes

    shapes = input_shapes(model)
    missing = [n for n in CACHE_INPUTS if n not in shapes]
    if missing:
        raise KVCacheInterfaceError(
            f"decode model {name} has no cache input(s) {missing} (its inputs: {list(shapes)}); a decode "
            f"model takes {list(DECODE_INPUTS)} with caches [layers, 1, heads, max_ctx, head_dim] -- export "
            "one with contrib.hf_export.export_gpt2_generation"
        )
    absent = [n for n in DECODE_INPUTS if n not in shapes]
    extra = [n for n in shapes if n not in DECODE_INPUTS]
    if absent or extra:
        raise KVCacheInterfaceError(
            f"decode model {name} takes {list(shapes)}; expected exactly {list(DECODE_INPUTS)}"
        )
    cache = tuple(shapes["past_key"])
    if len(cache) != 5 or cache[1] != 1 or tuple(shapes["past_value"]) != cache:
        raise KVCacheInterfaceError(
            f"decode model {name}: past_key {list(cache)} and past_value {shapes['past_value']} must both be "
            "[layers, 1, heads, max_ctx, head_dim]"
        )
    if shapes["input_ids"] != [1, 1] or shapes["position"] != [1]:
        raise KVCacheInterfaceError(
            f"decode model {name}: input_ids {shapes['input_ids']} and position {shapes['position']} must be "
            "[1, 1] and [1] (one token per step)"
        )
    vocab = _check_outputs(model, name, 1, cache)
    return tuple(shapes), cache, vocab


def _check_outputs(model, name: str, seq: int, cache: tuple[int, ...]) -> int:
    outputs = _output_shapes(model)
    if list(outputs) != list(OUTPUTS):
        raise KVCacheInterfaceError(
            f"model {name} returns {list(outputs)}; expected {list(OUTPUTS)} (logits and the updated cache)"
        )
    logits = outputs["logits"]
    if len(logits) != 3 or logits[:2] != [1, seq] or not logits[2]:
        raise KVCacheInterfaceError(f"model {name}: logits are {logits}; expected [1, {seq}, vocab]")
    for out in OUTPUTS[1:]:
        if tuple(outputs[out]) != cache:
            raise KVCacheInterfaceError(
                f"model {name}: {out} is {outputs[out]} but the decode cache is {list(cache)}"
            )
    return int(logits[2])


def read_signature(prefill_model, decode_model) -> Signature:
    """Check the pair's interface (see the module docstring); raise
    :class:`KVCacheInterfaceError` naming what differs."""
    from .frontend import input_shapes, load_onnx

    decode_name = _label(decode_model)
    decode = load_onnx(decode_model)
    order, cache, vocab = _check_decode(decode, decode_name)
    prefill_len = 0
    if prefill_model is not None:
        name = _label(prefill_model)
        prefill = load_onnx(prefill_model)
        shapes = input_shapes(prefill)
        if list(shapes) != list(PREFILL_INPUTS) or len(shapes["input_ids"]) != 2 or shapes["input_ids"][0] != 1:
            raise KVCacheInterfaceError(
                f"prefill model {name} takes {shapes}; expected only input_ids [1, N]"
            )
        prefill_len = shapes["input_ids"][1]
        prefill_vocab = _check_outputs(prefill, name, prefill_len, cache)
        if prefill_vocab != vocab:
            raise KVCacheInterfaceError(
                f"prefill model {name} has a vocabulary of {prefill_vocab}, decode model {decode_name} {vocab}"
            )
        if prefill_len > cache[3]:
            raise KVCacheInterfaceError(
                f"prefill model {name} takes {prefill_len} tokens but the cache holds {cache[3]} positions"
            )
    return Signature(vocab, cache[3], cache, prefill_len, order)


def _label(model) -> str:
    return "<ModelProto>" if hasattr(model, "graph") else str(model)


def check_tokens(signature: Signature, tokens: Sequence[int]) -> list[int]:
    """The ids as ints; one outside the vocabulary is a :class:`VocabularyError`."""
    ids = [int(t) for t in tokens]
    bad = [(i, t) for i, t in enumerate(ids) if not 0 <= t < signature.vocab]
    if bad:
        index, token = bad[0]
        raise VocabularyError(
            f"token id {token} (at index {index} of the prompt) is outside the vocabulary of "
            f"{signature.vocab} ids (valid: 0..{signature.vocab - 1})"
        )
    return ids


def check_context(signature: Signature, prompt_len: int, max_new_tokens: int) -> None:
    """A :class:`ContextLengthError` naming the compiled context when the prompt and the
    new tokens need more cache positions than it has (the last new token needs none)."""
    if prompt_len == 0:
        raise ContextLengthError("the prompt is empty; give at least one token id")
    limit = signature.max_ctx
    if prompt_len > limit:
        raise ContextLengthError(
            f"the prompt has {prompt_len} tokens, longer than the compiled context of {limit} positions"
        )
    needed = prompt_len + max(max_new_tokens - 1, 0)
    if needed > limit:
        raise ContextLengthError(
            f"a prompt of {prompt_len} tokens plus {max_new_tokens} new tokens needs {needed} positions, "
            f"more than the compiled context of {limit}: ask for at most {limit - prompt_len + 1} new tokens"
        )


@dataclass(frozen=True)
class Generation:
    """Result of :meth:`Generator.run`: the new tokens, and the logits the designs
    produced for every position that was fed (prompt, then each generated token but
    the last), one row per position."""

    prompt: tuple[int, ...]
    tokens: tuple[int, ...]
    logits: np.ndarray  # [len(prompt) + len(tokens) - 1, vocab]
    prefill_seconds: float = 0.0  # the prompt (prefill design, plus decode steps past N)
    decode_seconds: float = 0.0  # the decode steps after the prompt
    decode_steps: int = 0

    @property
    def decode_tokens_per_second(self) -> float:
        return self.decode_steps / self.decode_seconds if self.decode_seconds else float("nan")


class Generator:
    """Prefill and decode designs built once; :meth:`generate` runs them greedily.

    ``prefill_onnx`` may be ``None`` (the prompt then goes through decode steps).
    ``target`` is any ``relax.build`` target (``"vitis_spatial"``, ``"vitis_spatial/u55c"``,
    or ``"llvm"`` for TVM's own CPU build as a reference).
    """

    def __init__(self, prefill_onnx, decode_onnx, *, target: str = "vitis_spatial", transform=None):
        """``transform(stage, mod, signature) -> mod``, if given, rewrites each imported
        model ("prefill", "decode") before it is built, e.g. to quantize it."""
        import tvm
        from tvm import relax

        from .frontend import from_onnx

        self.signature = read_signature(prefill_onnx, decode_onnx)
        self.target = target
        self.executables = {}
        self._vms = {}
        for stage, model in (("prefill", prefill_onnx), ("decode", decode_onnx)):
            if model is None:
                continue
            mod = from_onnx(model)
            if transform is not None:
                mod = transform(stage, mod, self.signature)
            ex = relax.build(mod, target=target)
            self.executables[stage] = ex
            self._vms[stage] = relax.VirtualMachine(ex, tvm.cpu())["main"]
        self._tvm = tvm
        self.reset()

    # -- limits -------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.signature.vocab

    @property
    def max_context(self) -> int:
        return self.signature.max_ctx

    @property
    def prefill_length(self) -> int:
        return self.signature.prefill_len

    # -- state --------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the cache: the next call starts a new sequence at position 0."""
        self.position = 0
        zeros = np.zeros(self.signature.cache_shape, "float32")
        self._cache = (self._tvm.runtime.tensor(zeros), self._tvm.runtime.tensor(zeros))

    def check_tokens(self, tokens: Sequence[int]) -> list[int]:
        return check_tokens(self.signature, tokens)

    def check_context(self, prompt_len: int, max_new_tokens: int) -> None:
        check_context(self.signature, prompt_len, max_new_tokens)

    # -- steps --------------------------------------------------------------------------
    def prefill(self, tokens: Sequence[int]) -> np.ndarray:
        """Start a sequence with ``tokens``; returns their logits [len(tokens), vocab]."""
        ids = self.check_tokens(tokens)
        self.check_context(len(ids), 0)
        self.reset()
        rows = []
        n = self.prefill_length
        head = ids[:n] if n else []
        if head:
            padded = np.zeros((1, n), "int64")
            padded[0, : len(head)] = head
            logits, key, value = self._vms["prefill"](self._tvm.runtime.tensor(padded))
            self._cache = (key, value)
            self.position = len(head)
            rows.append(logits.numpy()[0, : len(head)])
        for token in ids[len(head):]:
            rows.append(self.decode(token)[None])
        return np.concatenate(rows)

    def decode(self, token: int) -> np.ndarray:
        """Feed one token at the current position; returns its logits [vocab]."""
        (token,) = self.check_tokens([token])
        if self.position >= self.max_context:
            raise ContextLengthError(
                f"position {self.position} is past the compiled context of {self.max_context} positions"
            )
        tensor = self._tvm.runtime.tensor
        args = {
            "input_ids": tensor(np.array([[token]], "int64")),
            "position": tensor(np.array([self.position], "int64")),
            "past_key": self._cache[0],
            "past_value": self._cache[1],
        }
        logits, key, value = self._vms["decode"](*[args[n] for n in self.signature.decode_inputs])
        self._cache = (key, value)  # vitis_spatial: the tensors passed in, updated in place
        self.position += 1
        return logits.numpy()[0, 0]

    def run(self, input_ids: Iterable[int], max_new_tokens: int) -> Generation:
        """Prefill ``input_ids``, then greedy decode steps: ``max_new_tokens`` new tokens."""
        ids = self.check_tokens(np.asarray(list(input_ids)).reshape(-1))
        if int(max_new_tokens) < 0:
            raise UsageError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        self.check_context(len(ids), int(max_new_tokens))
        start = time.perf_counter()
        rows = [self.prefill(ids)]
        prefill_seconds = time.perf_counter() - start
        new: list[int] = []
        start = time.perf_counter()
        while len(new) < max_new_tokens:
            new.append(int(np.argmax(rows[-1][-1])))
            if len(new) < max_new_tokens:
                rows.append(self.decode(new[-1])[None])
        decode_seconds = time.perf_counter() - start
        return Generation(tuple(ids), tuple(new), np.concatenate(rows), prefill_seconds, decode_seconds,
                          max(len(new) - 1, 0))

    def generate(self, input_ids: Iterable[int], max_new_tokens: int) -> list[int]:
        """The ``max_new_tokens`` greedy tokens that follow ``input_ids`` (prompt excluded)."""
        return list(self.run(input_ids, max_new_tokens).tokens)


def generate(prefill_onnx, decode_onnx, input_ids: Iterable[int], max_new_tokens: int,
             *, target: str = "vitis_spatial") -> list[int]:
    """Build both designs and return the greedy tokens after ``input_ids`` (see
    :class:`Generator`; reuse one to generate more than once)."""
    return Generator(prefill_onnx, decode_onnx, target=target).generate(input_ids, max_new_tokens)


def find_models(spec: str | os.PathLike) -> tuple[Path | None, Path]:
    """``(prefill, decode)`` ONNX paths from a directory, a prefix or one of the files.

    - a directory holding ``prefill.onnx`` and ``decode.onnx``, or one ``*_prefill.onnx``
      and one ``*_decode.onnx``;
    - a prefix ``P`` with ``P_prefill.onnx`` and ``P_decode.onnx`` beside it;
    - ``P_prefill.onnx`` or ``P_decode.onnx`` itself (the other found beside it);
    - any other ONNX file is taken as the decode model (checked for cache inputs).
    A missing prefill model is allowed (``None``); a missing decode model is a
    :class:`UsageError` that lists what was looked for.
    """
    path = Path(os.fspath(spec))
    if path.is_dir():
        plain = path / "prefill.onnx", path / "decode.onnx"
        if plain[1].is_file():
            return (plain[0] if plain[0].is_file() else None), plain[1]
        decodes = sorted(path.glob("*_decode.onnx"))
        if len(decodes) != 1:
            raise UsageError(
                f"{path} should hold decode.onnx or exactly one *_decode.onnx; found "
                f"{[d.name for d in decodes] or 'none'}"
            )
        prefix = path / decodes[0].name[: -len("_decode.onnx")]
    elif path.is_file():
        name = path.name
        if name.endswith("_prefill.onnx"):
            prefix = path.with_name(name[: -len("_prefill.onnx")])
        elif name.endswith("_decode.onnx"):
            prefix = path.with_name(name[: -len("_decode.onnx")])
        else:
            return None, path
    else:
        prefix = path
    prefill = prefix.with_name(prefix.name + "_prefill.onnx")
    decode = prefix.with_name(prefix.name + "_decode.onnx")
    if not decode.is_file():
        raise UsageError(
            f"no decode model for {str(spec)!r}: looked for {decode} (give a directory, a prefix P with "
            "P_prefill.onnx and P_decode.onnx, or one of those files)"
        )
    return (prefill if prefill.is_file() else None), decode
