"""What contrib/tune_bert.py and contrib/tune_gpt2.py share: the steps of TVM's tuning
tutorials (load -> extract the workload -> tune -> apply the database -> check), for a
vitis_spatial design whose runner is the analytical model."""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np


def arguments(description: str, fixture: str, kind: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--onnx", help=f"an ONNX model (default: the committed fixture tests/fixtures/{fixture}.onnx)")
    parser.add_argument("--export", choices=("tiny", "small" if kind == "gpt2" else "base"),
                        help="export a Hugging Face model with random weights instead (needs the export extra)")
    parser.add_argument("--device", default="u280", help="u280, u250 or u55c")
    parser.add_argument("--trials", type=int, default=64, help="total trials (default 64)")
    parser.add_argument("--trials-per-iter", type=int, default=16)
    parser.add_argument("--budget", type=float, default=0.85, help="share of every per-SLR resource")
    parser.add_argument("--work-dir", help="where the JSON database goes (default: a temporary directory)")
    parser.add_argument("--check", action="store_true",
                        help="build the tuned design, run it in emulation and compare with onnxruntime")
    return parser.parse_args()


def _model_path(args, fixture: str, kind: str, tmp: Path) -> Path:
    if args.onnx:
        return Path(args.onnx)
    if args.export:
        from contrib import hf_export

        big = {"gpt2": hf_export.GPT2_SMALL, "bert": hf_export.BERT_BASE}[kind]
        cfg = big if args.export in ("small", "base") else hf_export.ModelConfig(kind)
        return hf_export.export_onnx(cfg, tmp / f"{kind}.onnx")
    return Path(__file__).resolve().parent.parent / "tests" / "fixtures" / f"{fixture}.onnx"


def main(description: str, fixture: str, kind: str) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    args = arguments(description, fixture, kind)
    console = Console()
    with tempfile.TemporaryDirectory(prefix="tvm_spatial_tune_") as tmp:
        work_dir = Path(args.work_dir) if args.work_dir else Path(tmp) / "work"
        work_dir.mkdir(parents=True, exist_ok=True)

        # 1. Load the model: ONNX -> Relax
        import tvm_spatial
        from tvm_spatial.tuning.tuner import block_plans, plan_module, tune_design

        path = _model_path(args, fixture, kind, Path(tmp))
        mod = tvm_spatial.frontend.from_onnx(path)

        # 2. Extract the workload: the spatial design's processes (nothing compiled), in
        # the build's token block and in each smaller one tuning tries
        part, plan = plan_module(mod, args.device)
        others = block_plans(part, plan, args.device)
        matmuls = sum(1 for k in plan.kernels for p in k.processes if p.matmul)
        blocks = ", ".join(str(b) for b in sorted(others)) or "none"
        console.print(f"{path.name}: {matmuls} matmul processes to tune on {args.device}; "
                      f"token blocks tried besides the build's: {blocks}")

        # 3. Tune: meta-schedule with the analytical model as the runner (its per-round
        # tables go to the log files in the work directory; the console shows the bar)
        logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
        with Progress(TextColumn("[bold]tuning"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TextColumn("{task.fields[best]}"), TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("tune", total=args.trials, best="")

            def progress(best, trials, failed):
                bar.update(task, completed=trials, best=f"best {best * 1e3:.4f} ms, {failed} over budget")

            start = time.perf_counter()
            result = tune_design(plan, str(work_dir), max_trials=args.trials, trials_per_iter=args.trials_per_iter,
                                 budget=args.budget, progress=progress, block_plans=others)
        gain = 1 - result.best_seconds / result.baseline_seconds
        console.print(f"estimated prefill: allocation {result.baseline_seconds * 1e3:.4f} ms -> tuned "
                      f"{result.best_seconds * 1e3:.4f} ms ({gain:.2%} faster) in {time.perf_counter() - start:.1f} s, "
                      f"{result.trials} trials ({result.failed} over budget), best in blocks of {result.rows} tokens; "
                      f"database in {work_dir}")

        # 4. Apply the best records: relax.build inside ``with database:``
        if args.check:
            import tvm
            from tvm import relax

            with result.database:
                ex = relax.build(mod, target=tvm_spatial.target.tag_name(args.device))
            est = tvm_spatial.estimate(tvm_spatial.design_of(ex))
            console.print(f"built design's estimate: {est.prefill_ms:.4f} ms prefill")

            # 5. Check the tuned design in emulation against onnxruntime
            import onnx
            import onnxruntime as ort

            model = onnx.load(str(path), load_external_data=False)
            rng = np.random.default_rng(0)
            inputs = {}
            for inp in model.graph.input:
                dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
                if inp.type.tensor_type.elem_type == onnx.TensorProto.INT64:
                    inputs[inp.name] = (rng.integers(0, 2 if "mask" in inp.name else 64, dims)).astype(np.int64)
                else:
                    inputs[inp.name] = rng.standard_normal(dims).astype(np.float32)
            want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, inputs)
            got = relax.VirtualMachine(ex, tvm.cpu())["main"](*[tvm.runtime.tensor(v) for v in inputs.values()])
            got = [got] if isinstance(got, tvm.runtime.Tensor) else list(got)
            worst = max(float(np.max(np.abs(g.numpy() - w))) for g, w in zip(got, want))
            ok = worst <= 1e-4 * max(1.0, max(float(np.max(np.abs(w))) for w in want))
            console.print(f"emulation vs onnxruntime: max |diff| {worst:.2e} "
                          + ("[green]matches[/green]" if ok else "[red]MISMATCH[/red]"))
            if not ok:
                raise SystemExit(1)
