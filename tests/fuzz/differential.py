"""Build a spec for ``vitis_spatial`` and ``llvm``, run both, compare; shrink failures.

Outcomes (``Outcome.kind``):

``pass``
    Same outputs (shape, dtype, values within tolerance, NaN where llvm has NaN).
``mismatch``
    Both ran, some output differs. ``Outcome.outputs`` names the differing outputs.
``crash``
    The llvm build ran, the vitis_spatial build or run raised (any exception, typed or not:
    a supported graph that llvm handles must build).
``invalid``
    The llvm side failed too: the generator produced something Relax or ONNX rejects.
    Not a finding about tvm-spatial; counted separately.

``host_ops`` lists operators the build left on the host (a fallback, not a failure).
"""

from __future__ import annotations

import copy
import json
import pprint
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .generator import make_inputs, to_module

RTOL = 1e-4
ATOL = 1e-4


@dataclass
class Outcome:
    kind: str
    detail: str = ""
    outputs: list[str] = field(default_factory=list)
    host_ops: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return self.kind in ("mismatch", "crash")

    def signature(self) -> str:
        """What kind of failure this is, stable under shrinking (for the minimizer)."""
        if self.kind == "crash":
            first = self.detail.strip().splitlines()[0] if self.detail.strip() else ""
            first = re.sub(r"\d+", "N", first)
            first = re.sub(r"'[^']*'", "'…'", first)
            return f"crash:{first[:80]}"
        return self.kind


def compare(got: np.ndarray, want: np.ndarray) -> str | None:
    """None if ``got`` matches ``want``; otherwise a one-line description of the difference."""
    if got.shape != want.shape or got.dtype != want.dtype:
        return f"shape/dtype {got.dtype}{list(got.shape)} vs llvm {want.dtype}{list(want.shape)}"
    if not np.issubdtype(want.dtype, np.floating):
        bad = np.argwhere(got != want)
        if len(bad):
            i = tuple(bad[0])
            return f"{len(bad)} of {want.size} elements differ, first at {list(i)}: {got[i]} vs llvm {want[i]}"
        return None
    nan_g, nan_w = np.isnan(got), np.isnan(want)
    if (nan_g != nan_w).any():
        i = tuple(np.argwhere(nan_g != nan_w)[0])
        return f"NaN pattern differs, first at {list(i)}: {got[i]} vs llvm {want[i]}"
    inf_w = np.isinf(want)
    if (np.isinf(got) != inf_w).any() or (got[inf_w] != want[inf_w]).any():
        return "infinities differ"
    finite = ~(nan_w | inf_w)
    if not finite.any():
        return None
    g, w = got[finite].astype(np.float64), want[finite].astype(np.float64)
    scale = max(1.0, float(np.max(np.abs(w))))
    err = np.abs(g - w)
    bad = err > ATOL * scale + RTOL * np.abs(w)
    if bad.any():
        k = int(np.argmax(np.where(bad, err, -1)))
        return f"{int(bad.sum())} of {w.size} elements differ, max |diff| {err[k]:.3g} ({float(g[k])!r} vs llvm {float(w[k])!r})"
    return None


def _run(ex, inputs):
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(v) for v in inputs])
    if isinstance(out, tvm.runtime.Tensor):
        return [out.numpy()]
    return [o.numpy() for o in out]


def _error(exc: BaseException) -> str:
    """``Type: message`` plus the innermost frame of our own code that raised it."""
    import traceback

    text = f"{type(exc).__name__}: {exc}".strip()
    ours = [
        f for f in traceback.extract_tb(exc.__traceback__)
        if "site-packages" not in f.filename and "/fuzz/" not in f.filename and f.filename.endswith(".py")
    ]
    if ours:
        where = ours[-1]
        text += f"\n  raised at {Path(where.filename).parent.name}/{Path(where.filename).name}:{where.lineno} ({where.line})"
    return text


def run_case(spec, target: str = "vitis_spatial") -> Outcome:
    """Build ``spec`` for ``target`` and for llvm; run both on the spec's inputs; compare."""
    import tvm_spatial  # noqa: F401 - registers the target
    from tvm import relax

    inputs = make_inputs(spec)
    try:
        mod = to_module(spec)
        ref = _run(relax.build(mod, target="llvm"), inputs)
    except Exception as exc:  # noqa: BLE001 - the generator made something TVM rejects
        return Outcome("invalid", _error(exc))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # host fallbacks are read from the report
            ex = relax.build(mod, target=target)
        got = _run(ex, inputs)
        host_ops = tvm_spatial.build_report(ex).host_ops
    except Exception as exc:  # noqa: BLE001 - any failure of our side is a finding
        return Outcome("crash", _error(exc))
    if len(got) != len(ref):
        return Outcome("mismatch", f"{len(got)} outputs vs llvm {len(ref)}", list(spec["outputs"]), host_ops)
    problems = []
    names = []
    for name, g, w in zip(spec["outputs"], got, ref):
        why = compare(g, w)
        if why:
            problems.append(f"{name}: {why}")
            names.append(name)
    if problems:
        return Outcome("mismatch", "; ".join(problems), names, host_ops)
    return Outcome("pass", host_ops=host_ops)


# ----------------------------------------------------------------------------------------
# shrinking

def _prune(spec) -> dict:
    """Drop nodes whose outputs nobody needs and inputs nobody reads."""
    needed = set(spec["outputs"])
    nodes = []
    for node in reversed(spec["nodes"]):
        if any(o in needed for o in node["outs"]):
            nodes.append(node)
            needed.update(node["args"])
    spec = dict(spec)
    spec["nodes"] = list(reversed(nodes))
    spec["inputs"] = [i for i in spec["inputs"] if i["name"] in needed]
    spec["groups"] = {o: g for o, g in spec.get("groups", {}).items() if o in spec["outputs"]}
    return spec


def _candidates(spec, types):
    """Smaller variants of ``spec``, most aggressive first."""
    outs = spec["outputs"]
    groups = spec.get("groups", {})
    # 1. keep one subgraph, then one output
    for grp in sorted(set(groups.values())):
        keep = [o for o in outs if groups.get(o) == grp]
        if 0 < len(keep) < len(outs):
            yield {**spec, "outputs": keep}
    if len(outs) > 1:
        for o in outs:
            yield {**spec, "outputs": [o]}
    # 2. return an operand of the node that produced an output instead
    produced = {o: n for n in spec["nodes"] for o in n["outs"]}
    for i, out in enumerate(outs):
        node = produced.get(out)
        if node is None:
            continue
        for arg in node["args"]:
            if arg in produced and produced[arg]["op"] != "const":
                new_outs = outs[:i] + [arg] + outs[i + 1:]
                yield {**spec, "outputs": new_outs, "groups": {o: groups.get(out, 0) if o == arg else groups.get(o, 0) for o in new_outs}}
    # 3. cut the graph: a node's output becomes a fresh input (drops everything upstream)
    for node in spec["nodes"]:
        if node["op"] == "const":
            continue
        for out in node["outs"]:
            if out not in types:
                continue
            shape, dtype = types[out]
            new = copy.deepcopy(spec)
            new["nodes"] = [n for n in new["nodes"] if out not in n["outs"] or len(n["outs"]) > 1]
            if len(node["outs"]) > 1:
                continue
            lo, hi = (-2.0, 2.0) if dtype.startswith("float") else (0, 1) if dtype == "bool" else (-8, 8)
            new["inputs"].append({"name": out, "shape": list(shape), "dtype": dtype, "lo": lo, "hi": hi,
                                  "step": None})
            yield new
    # 4. bypass a node: its users read its first argument instead (same type only)
    for node in spec["nodes"]:
        if len(node["outs"]) != 1 or not node["args"]:
            continue
        out = node["outs"][0]
        for arg in node["args"]:
            if types.get(arg) == types.get(out) and arg in types:
                new = copy.deepcopy(spec)
                new["nodes"] = [n for n in new["nodes"] if n["outs"] != [out]]
                for n in new["nodes"]:
                    n["args"] = [arg if a == out else a for a in n["args"]]
                new["outputs"] = [arg if o == out else o for o in new["outputs"]]
                new["groups"] = {(arg if o == out else o): g for o, g in new.get("groups", {}).items()}
                yield new
                break
    # 5. constants become inputs (a different port kind); inputs get plain data
    for node in spec["nodes"]:
        if node["op"] == "const":
            a = node["attrs"]
            new = copy.deepcopy(spec)
            new["nodes"] = [n for n in new["nodes"] if n["outs"] != node["outs"]]
            new["inputs"].append({"name": node["outs"][0], "shape": a["shape"], "dtype": a["dtype"],
                                  "lo": a["lo"], "hi": a["hi"], "step": a.get("step")})
            yield new
    # 6. shrink input dimensions: one axis of every input that has that size there (keeps
    # concat/broadcast partners consistent), then one input at a time
    for d in range(max((len(i["shape"]) for i in spec["inputs"]), default=0)):
        for size in sorted({i["shape"][d] for i in spec["inputs"] if len(i["shape"]) > d}):
            for smaller in sorted({1, size // 2}):
                if 1 <= smaller < size:
                    new = copy.deepcopy(spec)
                    for inp in new["inputs"]:
                        if len(inp["shape"]) > d and inp["shape"][d] == size:
                            inp["shape"][d] = smaller
                    yield new
    for k, inp in enumerate(spec["inputs"]):
        for d, size in enumerate(inp["shape"]):
            for smaller in sorted({1, size // 2}):
                if 1 <= smaller < size:
                    new = copy.deepcopy(spec)
                    new["inputs"][k]["shape"][d] = smaller
                    yield new


def minimize(spec, outcome: Outcome, target: str = "vitis_spatial", budget: int = 300, log=None,
             run=None) -> tuple[dict, Outcome]:
    """Greedy shrink: take the first smaller variant that fails the same way, repeat.

    ``run(spec) -> Outcome`` runs a candidate (default: :func:`run_case` in this process;
    ``runner.Pool.run_one`` survives candidates that kill the process)."""
    from .generator import value_types

    run_case_ = run or (lambda candidate: run_case(candidate, target))
    want = outcome.signature()
    spec = _prune(spec)
    if outcome.kind == "mismatch" and outcome.outputs:
        trial = _prune({**spec, "outputs": outcome.outputs[:1]})
        res = run_case_(trial)
        if res.signature() == want:
            spec, outcome = trial, res
    tries = 0
    progress = True
    while progress and tries < budget:
        progress = False
        try:
            types = value_types(spec)
        except Exception:  # noqa: BLE001
            types = {}
        for cand in _candidates(spec, types):
            cand = _prune(cand)
            if not cand["outputs"] or (len(cand["nodes"]), _size(cand)) >= (len(spec["nodes"]), _size(spec)):
                continue
            tries += 1
            res = run_case_(cand)
            if log:
                log(f"  shrink try {tries}: {len(cand['nodes'])} nodes -> {res.kind}")
            if res.signature() == want:
                spec, outcome, progress = cand, res, True
                break
            if tries >= budget:
                break
    return spec, outcome


def _size(spec) -> int:
    return sum(int(np.prod(i["shape"])) for i in spec["inputs"]) + sum(
        int(np.prod(n["attrs"]["shape"])) for n in spec["nodes"] if n["op"] == "const"
    )


# ----------------------------------------------------------------------------------------
# regression files

_TEMPLATE = '''"""Regression found by the differential fuzzer ({origin}).

Outcome when found: {kind}
{detail}
"""

import pytest
from fuzz.differential import run_case

SPEC = {spec}


@pytest.mark.xfail(strict=True, reason={reason!r})
def test_{name}():
    outcome = run_case(SPEC)
    assert outcome.kind == "pass", outcome.detail
'''


def describe(spec) -> str:
    """A one-line summary of the nodes of a spec (``x1[2,3]f32 -> add -> ...``)."""
    parts = []
    for node in spec["nodes"]:
        if node["op"] != "const":
            parts.append(f"{node['op']}({', '.join(node['args'])})")
    return "; ".join(parts)


def write_regression(spec, outcome: Outcome, directory: Path, origin: str, reason: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    ops = sorted({n["op"] for n in spec["nodes"] if n["op"] != "const"})
    stem = re.sub(r"\W+", "_", f"{spec['frontend']}_{'_'.join(ops)[:60]}_{outcome.kind}").strip("_").lower()
    name = stem
    k = 2
    while (directory / f"test_{name}.py").exists():
        name = f"{stem}_{k}"
        k += 1
    detail = "\n".join(
        line for line in (outcome.detail[:1500] + "\nGraph: " + describe(spec)).splitlines()
    )
    text = _TEMPLATE.format(
        origin=origin,
        kind=outcome.kind,
        detail=detail.replace('"""', "'''"),
        spec=pprint.pformat(json.loads(json.dumps(spec)), width=100, sort_dicts=False),
        reason=reason or f"{outcome.kind}: {outcome.detail.splitlines()[0][:150] if outcome.detail else ''}",
        name=name,
    )
    path = directory / f"test_{name}.py"
    path.write_text(text)
    return path
