"""GPT2 decode with a KV cache: tokens/s of the vitis_spatial design in emulation next to
onnxruntime on the same prefill/decode ONNX pair, in one run.

Both sides run the same greedy loop (prefill the prompt, then one decode step per token,
the cache handed from step to step), one thread each; the table shows decode tokens/s,
prompt time, and whether the two produced the same tokens. Next to them, the analytical
model's decode tokens/s on a U280 (``tvm_spatial.estimate`` of the decode design as built:
its MAC arrays, its KV cache per layer in URAM/BRAM or HBM) -- an estimate, not a run.

Needs the ``export`` extra. Usage:

    python benchmarks/decode.py [--models tiny,small] [--new-tokens 32] [--runs 3]

``tiny`` is the test fixture's size; ``small`` is GPT2-small (12 layers, hidden 768,
vocabulary 50257) with a 32-token prefill and a 256-position cache (``--max-ctx``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table


def _configs():
    from contrib.hf_export import GPT2_SMALL, ModelConfig

    return {
        "tiny": (ModelConfig("gpt2", layers=2, hidden=64, heads=4, ffn=256, vocab=128, positions=64, seq=16), 64),
        "small": (replace(GPT2_SMALL, seq=32), 256),
    }


class OrtGenerator:
    """The same greedy loop as tvm_spatial.generate.Generator, on onnxruntime sessions."""

    def __init__(self, prefill: Path, decode: Path, signature):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.prefill = ort.InferenceSession(str(prefill), options, providers=["CPUExecutionProvider"])
        self.decode = ort.InferenceSession(str(decode), options, providers=["CPUExecutionProvider"])
        self.signature = signature

    def run(self, prompt: list[int], max_new_tokens: int):
        n = self.signature.prefill_len
        assert len(prompt) <= n, "the benchmark's prompt fits the prefill design"
        padded = np.zeros((1, n), "int64")
        padded[0, : len(prompt)] = prompt
        start = time.perf_counter()
        logits, key, value = self.prefill.run(None, {"input_ids": padded})
        prefill_seconds = time.perf_counter() - start
        last = logits[0, len(prompt) - 1]
        tokens = []
        start = time.perf_counter()
        for position in range(len(prompt), len(prompt) + max_new_tokens):
            tokens.append(int(np.argmax(last)))
            if len(tokens) == max_new_tokens:
                break
            feeds = {"input_ids": np.array([[tokens[-1]]], "int64"), "position": np.array([position], "int64"),
                     "past_key": key, "past_value": value}
            logits, key, value = self.decode.run(None, feeds)
            last = logits[0, 0]
        decode_seconds = time.perf_counter() - start
        return tokens, prefill_seconds, decode_seconds, max(len(tokens) - 1, 0)


def measure(name: str, new_tokens: int, runs: int, max_ctx: int | None, workdir: Path) -> dict:
    os.environ["OMP_NUM_THREADS"] = "1"
    from contrib.hf_export import export_gpt2_generation
    from tvm_spatial.generate import Generator

    cfg, default_ctx = _configs()[name]
    max_ctx = max_ctx or default_ctx
    start = time.perf_counter()
    prefill, decode = export_gpt2_generation(cfg, workdir / name, max_ctx)
    export_s = time.perf_counter() - start
    start = time.perf_counter()
    spatial = Generator(prefill, decode)
    build_s = time.perf_counter() - start
    ort = OrtGenerator(prefill, decode, spatial.signature)

    prompt = np.random.default_rng(0).integers(0, cfg.vocab, min(8, cfg.seq)).tolist()
    new_tokens = min(new_tokens, max_ctx - len(prompt) + 1)
    spatial.run(prompt, 2)  # warm-up (first-call costs)
    ort.run(prompt, 2)
    emu, ref = [], []
    for _ in range(runs):
        emu.append(spatial.run(prompt, new_tokens))
        ref.append(ort.run(prompt, new_tokens))
    estimated = estimate_decode(spatial.executables["decode"])
    emu_rate = statistics.median(r.decode_tokens_per_second for r in emu)
    ort_rate = statistics.median(steps / seconds for _, _, seconds, steps in ref)
    return {
        "model": f"{name} (L{cfg.layers} H{cfg.hidden} V{cfg.vocab} N{cfg.seq} ctx{max_ctx})",
        "export_s": export_s,
        "build_s": build_s,
        "steps": emu[0].decode_steps,
        "emu_rate": emu_rate,
        "ort_rate": ort_rate,
        "emu_prefill_ms": 1e3 * statistics.median(r.prefill_seconds for r in emu),
        "ort_prefill_ms": 1e3 * statistics.median(p for _, p, _, _ in ref),
        "same_tokens": list(emu[0].tokens) == ref[0][0],
        **estimated,
    }


def estimate_decode(decode_ex, device: str = "u280") -> dict:
    """Analytical decode tokens/s of the built decode design on ``device``, and where its
    KV cache lives (see tvm_spatial.estimate.kvcache)."""
    import tvm_spatial
    from tvm_spatial.estimate.report import kv_summary

    est = tvm_spatial.estimate(decode_ex, device=device)
    frac, slr, resource = est.max_slr_utilization
    fits = "fits" if frac <= 1 else f"does not fit: SLR{slr} {resource} {frac:.0%}"
    return {"est_rate": 1e3 / est.decode_ms, "est_bound": f"{est.decode_memory_ratio:.0%} of HBM roofline",
            "est_kv": kv_summary(est).split(" (K and V")[0], "est_device": est.device.name, "est_fits": fits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="tiny,small")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-ctx", type=int, default=None, help="cache positions (default per model)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="tvm_spatial_decode_") as tmp:
        for name in args.models.split(","):
            rows.append(measure(name.strip(), args.new_tokens, args.runs, args.max_ctx, Path(tmp)))
    table = Table(title="GPT2 greedy decode: vitis_spatial emulation vs onnxruntime (1 thread)")
    for col in ("model", "build s", "decode steps", "tokens/s (emulation / ort)", "ratio",
                "prompt ms (emulation / ort)", "same tokens", "U280 tokens/s (estimate)", "KV cache (estimate)",
                "U280 fit (estimate)"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["model"], f"{r['build_s']:.1f}", str(r["steps"]),
            f"{r['emu_rate']:.1f} / {r['ort_rate']:.1f}", f"{r['emu_rate'] / r['ort_rate']:.2f}",
            f"{r['emu_prefill_ms']:.1f} / {r['ort_prefill_ms']:.1f}", "yes" if r["same_tokens"] else "NO",
            f"{r['est_rate']:,.0f} ({r['est_bound']})", r["est_kv"], r["est_fits"],
        )
    console = Console(width=max(Console().width, 190))
    console.print(table)
    console.print("U280 tokens/s is the analytical model's estimate of the decode design as built "
                  "(tvm_spatial.estimate at the card's default clock), not a measurement; the fit column "
                  "says whether that design fits the card (a design that does not is built with the "
                  "library's default arrays, and its estimate is of hardware the card cannot hold).")


if __name__ == "__main__":
    main()
