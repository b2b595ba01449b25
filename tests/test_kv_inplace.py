"""The decode design updates its KV cache in place (``relax_passes.kv_inplace``).

What a step must do: write one new K and one new V row per layer into the cache buffer
the caller passed (an ``inout`` port), return that same buffer as the present cache, and
compute what the ONNX graph computes. References are independent of the codegen: the
fixture's onnxruntime outputs, TVM's own ``llvm`` build of the same graph (fresh output
tensors, no aliasing), and numpy slicing of the cache.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tvm
from test_generated_cpp import _compile, _explain, _run_sanitized, _strict_kernel_args
from test_fixture_quality import _assert_clean_sanitized_run
from tvm import relax

import tvm_spatial
from codegen_hls import emulation
from codegen_hls.design import Design
from codegen_hls.host_code import host_cpp
from relax_passes.kv_inplace import find_cache_updates, kv_inplace
from tvm_spatial.generate import Generator

FIXTURES = Path(__file__).parent / "fixtures"
PREFILL, DECODE = FIXTURES / "gpt2_tiny_prefill.onnx", FIXTURES / "gpt2_tiny_decode.onnx"
CACHE = ("past_key", "past_value")


def _build_decode():
    """Spread over the U280's 3 SLRs (the allocation alone packs this small design into
    fewer): a cache's per-layer ports then sit in different kernels, the hard case for
    sharing one buffer."""
    with tvm_spatial.allocation(slrs=3):
        return relax.build(tvm_spatial.frontend.from_onnx(DECODE), target="vitis_spatial")


@pytest.fixture(scope="module")
def decode_ex():
    return _build_decode()


@pytest.fixture(scope="module")
def design(decode_ex):
    return tvm_spatial.design_of(decode_ex)


def _inputs():
    data = np.load(FIXTURES / "gpt2_tiny_generate.npz")
    names = [k.split(":", 2)[2] for k in data.files if k.startswith("in:decode:")]
    return data, names, {n: data[f"in:decode:{n}"] for n in names}


def _cache_shape():
    _, _, inputs = _inputs()
    return inputs["past_key"].shape


# -- Relax ------------------------------------------------------------------------------


def test_pass_finds_both_caches_and_nothing_in_prefill():
    decode = relax.transform.FoldConstant()(tvm_spatial.frontend.from_onnx(DECODE))
    updates = find_cache_updates(decode["main"])
    assert [(u.output, u.param) for u in updates] == [(1, 2), (2, 3)]  # present_* <- past_*
    assert all(len(u.layers) == _cache_shape()[0] for u in updates)
    prefill = tvm_spatial.frontend.from_onnx(PREFILL)
    assert find_cache_updates(prefill["main"]) == []
    assert kv_inplace(prefill) is prefill


def test_main_calls_the_kernel_in_place():
    """After partitioning, main's one kernel call is call_inplace_packed whose aliased
    outputs are past_key and past_value, returned as present_key and present_value."""
    from relax_passes import partition_for_vitis_spatial

    mod = partition_for_vitis_spatial(tvm_spatial.frontend.from_onnx(DECODE))
    main = mod["main"]
    calls = []

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            calls.append(expr)

    relax.analysis.post_order_visit(main.body, visit)
    packed = [c for c in calls if c.op.name == "relax.call_inplace_packed"]
    assert len(packed) == 1 and not any(c.op.name in ("relax.concat", "relax.call_dps_packed") for c in calls)
    call = packed[0]
    indices = [int(i) for i in call.attrs.inplace_indices]
    named = [call.args[1 + i] for i in indices]  # args[0] is the extern function
    assert [v.name for v in named[:2]] == list(CACHE)
    text = main.script()
    assert re.search(r"gv: .* = lv, kv_updated, kv_updated1", text), text[-800:]


# -- the design -----------------------------------------------------------------------


def test_cache_ports_are_inout_in_the_design_json(design):
    (kernel,) = design.kernels
    cache = [p for p in kernel.ports if p.name.startswith(CACHE)]
    layers = _cache_shape()[0]
    assert len(cache) == 2 * layers  # one port per layer's update process, K and V
    assert {p.direction for p in cache} == {"inout"}
    assert {p.arg for p in cache if p.name.startswith("past_key")} != {p.arg for p in cache if p.name.startswith("past_value")}
    assert [p.direction for p in kernel.ports if p.direction != "in"].count("out") == 1  # logits only
    data = json.loads(design.to_json())
    assert {p["direction"] for p in data["kernels"][0]["ports"] if p["name"].startswith(CACHE)} == {"inout"}
    assert Design.from_json(design.to_json()) == design
    ops = [p.op for p in kernel.processes]
    assert ops.count("kv_append") == 2 * layers and "kv_update" not in ops and "concat" not in ops and "take" not in ops


def _functions(source: str) -> dict[str, tuple[str, list[str]]]:
    """C function name -> (parameter text, body lines), from the printed kernel."""
    out = {}
    lines = source.split("\n")
    for i, line in enumerate(lines):
        m = re.match(r'^(?:static void|extern "C" void|void) (\w+)\((.*)\) \{$', line)
        if not m:
            continue
        body = []
        for inner in lines[i + 1:]:
            if inner == "}":
                break
            body.append(inner)
        out[m.group(1)] = (m.group(2), body)
    return out


def _enclosing_loops(body: list[str], index: int) -> list[int]:
    """Trip counts of the ``for (int v = 0; v < N; ++v)`` loops enclosing line ``index``."""
    depth = len(body[index]) - len(body[index].lstrip())
    bounds = []
    for line in reversed(body[:index]):
        indent = len(line) - len(line.lstrip())
        if indent < depth and line.strip():
            depth = indent
            m = re.match(r"\s*for \(int \w+ = 0; \w+ < (\d+); \+\+\w+\) \{", line)
            if m:
                bounds.append(int(m.group(1)))
    return bounds


def test_kernel_writes_the_cache_only_one_row_per_layer(design):
    """Every store into a cache port sits in a loop nest of heads x head_dim (one row), none
    over the context; stage functions only read the cache (const); each store's process
    is a kv_append (an update whose attention merges the row), whose port is the only
    non-const cache parameter."""
    layers, _, heads, ctx, head_dim = _cache_shape()
    (kernel,) = design.kernels
    cache_ports = {p.name for p in kernel.ports if p.name.startswith(CACHE)}
    funcs = _functions(kernel.source)
    stores = 0
    for name, (params, body) in funcs.items():
        for port in cache_ports:
            declared = re.search(rf"(const )?float {port}\[{layers}\]\[1\]\[{heads}\]\[{ctx}\]\[{head_dim}\]", params)
            if declared is None:
                continue
            if "__" in name:  # a TIR stage function (take): reads only
                assert declared.group(1) == "const ", (name, port)
            for i, line in enumerate(body):
                if re.match(rf"\s*{port}\[", line) and "=" in line:
                    stores += 1
                    assert "_kv_append" in name, (name, line)
                    assert sorted(_enclosing_loops(body, i)) == sorted([heads, head_dim]), (name, line)
                    assert line.strip() == f"{port}[layer][0][h][pos][d] = " + line.split("= ", 1)[1]
    assert stores == 2 * layers  # one row store per (layer, K/V) process
    # the stage functions the processes call take the cache const; nothing else writes it
    for name, (params, body) in funcs.items():
        if "__" in name:
            assert not re.search(r"(?<!const )float \w+\[\d+\]\[1\]\[\d+\]\[\d+\]\[\d+\]", params), name


def test_decode_step_equals_onnxruntime_and_the_llvm_build_and_aliases_its_cache(decode_ex):
    _check_decode_step(decode_ex)


@pytest.fixture(scope="module")
def decode_reuse_ex():
    with tvm_spatial.allocation(layers="reuse"):
        return relax.build(tvm_spatial.frontend.from_onnx(DECODE), target="vitis_spatial")


def test_reused_layer_updates_its_own_layer_of_the_cache_per_call(decode_reuse_ex):
    """With one layer's hardware called once per layer (relax_passes.layer_reuse), K and V
    each have one update process and one cache port; which layer it writes is an argument
    of the call (the kv_append's ``layer``), and the step still equals onnxruntime and the
    llvm build, every layer's row written in place."""
    layers = _cache_shape()[0]
    design = tvm_spatial.design_of(decode_reuse_ex)
    (layer_kernel,) = [k for k in design.kernels if k.calls == layers]
    cache = [p for p in layer_kernel.ports if p.name.startswith(CACHE)]
    assert sorted(p.name for p in cache) == sorted(CACHE) and {p.direction for p in cache} == {"inout"}
    assert [p.op for p in layer_kernel.processes].count("kv_append") == 2
    assert not any(p.name.startswith(CACHE) for k in design.kernels if k is not layer_kernel for p in k.ports)
    _check_decode_step(decode_reuse_ex)


def _check_decode_step(ex):
    data, names, inputs = _inputs()
    want = [data[f"out:decode:{n}"] for n in ("logits", "present_key", "present_value")]
    vm = relax.VirtualMachine(ex, tvm.cpu())["main"]
    args = {n: tvm.runtime.tensor(v) for n, v in inputs.items()}
    got = vm(*[args[n] for n in names])
    ref_vm = relax.VirtualMachine(relax.build(tvm_spatial.frontend.from_onnx(DECODE), target="llvm"), tvm.cpu())
    ref = ref_vm["main"](*[tvm.runtime.tensor(inputs[n]) for n in names])
    for g, r, w in zip(got, ref, want):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(g.numpy(), r.numpy(), rtol=1e-4, atol=1e-4)
    # the present caches ARE the past tensors passed in; only row `position` changed
    assert got[1].same_as(args["past_key"]) and got[2].same_as(args["past_value"])
    assert not ref[1].same_as(args["past_key"])  # the llvm build returns new tensors
    pos = int(inputs["position"][0])
    for cache, name in zip(got[1:], CACHE):
        before, after = inputs[name], cache.numpy()
        keep = np.ones(after.shape[3], bool)
        keep[pos] = False
        np.testing.assert_array_equal(after[:, :, :, keep], before[:, :, :, keep])


def test_generator_steps_match_the_llvm_generator():
    """Greedy runs through prefill + in-place decode steps equal TVM's llvm build token for
    token (the reference keeps no aliasing), over a prompt longer than the prefill."""
    prompt = [5, 17, 99, 3, 64, 21, 8, 100, 42, 7, 1, 2, 3, 4, 5, 6, 77, 31, 12]
    spatial = Generator(PREFILL, DECODE).run(prompt, 8)
    reference = Generator(PREFILL, DECODE, target="llvm").run(prompt, 8)
    assert spatial.tokens == reference.tokens
    np.testing.assert_allclose(spatial.logits, reference.logits, rtol=1e-4, atol=1e-4)


def test_host_program_reads_and_writes_back_an_inout_port(design):
    text = host_cpp(design)
    assert re.search(r'\{"past_key", true, true, \d+ \* sizeof\(float\), "[^"]*", nullptr\}', text)
    assert re.search(r'\{"out", false, true, ', text)
    assert "if (!spec.ports[i].is_output || spec.ports[i].shares != nullptr)" in text


# -- one cache, one buffer object, one bank ---------------------------------------------------
#
# What the card needs: every port writing a cache is one m_axi argument onto the SAME buffer
# object, so all of them are connected to one bank and the host passes that one bo to each.
# The expectations below come from the design's ports (Port.arg, Port.direction) alone.


def _cache_groups(design) -> dict[int, list[tuple[str, str]]]:
    """Written argument with several ports -> its (Vitis kernel, port) in Vitis-kernel
    order, from the ports."""
    (kernel,) = design.kernels
    written = {p.arg for p in kernel.ports if p.direction in ("out", "inout") and p.arg >= 0}
    groups: dict[int, list[tuple[str, str]]] = {}
    for vk in kernel.vitis_kernels():
        for port in vk.ports:
            if port.arg in written:
                groups.setdefault(port.arg, []).append((vk.name, port.name))
    return {arg: ports for arg, ports in groups.items() if len(ports) > 1}


def _readers(design) -> dict[int, list[tuple[str, str]]]:
    """Read-only arguments read through several ports -> those ports."""
    (kernel,) = design.kernels
    by_arg: dict[int, list] = {}
    for vk in kernel.vitis_kernels():
        for port in vk.ports:
            by_arg.setdefault(port.arg, []).append((vk.name, port))
    return {a: [(vk, p.name) for vk, p in ps] for a, ps in by_arg.items()
            if len(ps) > 1 and all(p.direction == "in" for _, p in ps)}


def _sp_lines(cfg: str) -> dict[tuple[str, str], str]:
    found = {}
    for line in cfg.splitlines():
        m = re.match(r"sp=(\w+)_1\.(\w+):(\S+)$", line)
        if m:
            found[(m.group(1), m.group(2))] = m.group(3)
    return found


@pytest.fixture(scope="module")
def decode_project(design, tmp_path_factory):
    from codegen_hls.project import write_project

    return write_project(design, tmp_path_factory.mktemp("decode") / "proj")


def test_groups_are_the_caches(design):
    """Sanity of the derivation: two written arguments, past_key's and past_value's ports,
    one per layer (K and V), spread over the SLR segments."""
    groups = _cache_groups(design)
    names = sorted(sorted(n for _, n in g) for g in groups.values())
    layers = _cache_shape()[0]
    assert len(groups) == 2 and all(len(g) == layers for g in names)
    assert [g[0] for g in names] == list(CACHE)  # the first port keeps the argument's name
    assert any(len({vk for vk, _ in g}) > 1 for g in groups.values())  # crosses kernels


def test_connectivity_puts_each_cache_on_one_bank(design, decode_project):
    from codegen_hls.vitis_files import METADATA_XCLBIN
    from codegen_hls.xclbin import read_interface

    sp = _sp_lines((decode_project / "connectivity.cfg").read_text())
    caches = _cache_groups(design)
    for ports in caches.values():
        assert len({sp[p] for p in ports}) == 1, {p: sp[p] for p in ports}
    assert sp[caches[min(caches)][0]] != sp[caches[max(caches)][0]]  # K and V apart
    # read-only tensors read by several processes keep one bank per reader
    readers = _readers(design)
    assert readers
    for ports in readers.values():
        banks = [sp[p] for p in ports]
        assert len(set(banks)) == len(banks), banks
    # what XRT reads (the xclbin's CONNECTIVITY) says the same
    info = read_interface((decode_project / METADATA_XCLBIN).read_bytes())
    assert {k: info.banks[k] for k in sp} == sp


def _host_table(text: str) -> dict[str, str | None]:
    """Port -> the port whose buffer object it is passed (None: its own), from host.cpp."""
    rows = re.findall(r'\{"(\w+)", (?:true|false), (?:true|false), \d+ \* sizeof\([\w ]+\), "[^"]*", '
                      r'(nullptr|"\w+")\},', text)
    return {name: None if shares == "nullptr" else shares.strip('"') for name, shares in rows}


def test_host_passes_one_buffer_object_to_every_port_of_a_cache(design, decode_project):
    table = _host_table((decode_project / "host" / "host.cpp").read_text())
    (kernel,) = design.kernels
    assert set(table) == {p.name for p in kernel.ports}
    caches = _cache_groups(design)
    want = {p.name: None for p in kernel.ports}
    for ports in caches.values():
        for _, name in ports[1:]:
            want[name] = ports[0][1]
    assert table == want


def test_noop_run_moves_each_cache_once(design, decode_project, tmp_path):
    """Under XRT's noop shim: the host built -Werror runs without an XRT warning (a bo
    passed to an argument in another bank would make XRT warn), reads one file per cache
    and writes each cache back once; an xclbin connecting a cache's ports to two banks is
    refused in one line."""
    import dataclasses

    import test_xrt_host

    if test_xrt_host.pytestmark.args[0]:
        pytest.skip(test_xrt_host.pytestmark.kwargs["reason"])
    from codegen_hls.vitis_files import METADATA_XCLBIN, place
    from codegen_hls.xclbin import metadata_xclbin
    from tvm_spatial.devices import get_device

    host = test_xrt_host.compile_host(decode_project)  # -Wall -Wextra -Werror
    root = tmp_path / "xilinx_xrt"
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "libxrt_noop.so.2").symlink_to(test_xrt_host.NOOP_LIB)
    env = {**os.environ, "XILINX_XRT": str(root), "XCL_EMULATION_MODE": "noop"}
    caches = _cache_groups(design)
    sharing = {name for ports in caches.values() for _, name in ports[1:]}
    data = decode_project / "data"
    data.mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    for vk in design.vitis_kernels():
        for port in vk.ports:
            if port.direction != "out" and port.name not in sharing:
                (data / f"{vk.name}.{port.name}.bin").write_bytes(
                    rng.standard_normal(port.shape).astype(port.dtype).tobytes())

    def run(xclbin):
        return subprocess.run([str(host), str(xclbin), "data"], cwd=decode_project, env=env,
                              capture_output=True, text=True, timeout=120)

    result = run(decode_project / METADATA_XCLBIN)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    written = [line.split(": wrote data/", 1)[1] for line in result.stdout.splitlines()]
    want = [f"{ports[0][0]}.{ports[0][1]}.out.bin" for ports in caches.values()]
    want += [f"{vk.name}.{p.name}.out.bin" for vk in design.vitis_kernels() for p in vk.ports if p.direction == "out"]
    assert sorted(written) == sorted(want)
    for ports in caches.values():  # the noop shim leaves the cache as it went in
        vk, name = ports[0]
        assert (data / f"{vk}.{name}.out.bin").read_bytes() == (data / f"{vk}.{name}.bin").read_bytes()

    placement = place(design, get_device(design.device))
    (first_vk, first), (other_vk, other) = next(iter(caches.values()))[:2]
    banks = dict(placement.banks)
    banks[(other_vk, other)] = next(b for b in get_device(design.device).memory_banks
                                    if b != banks[(first_vk, first)])
    bad = tmp_path / "split_cache.xclbin"
    bad.write_bytes(metadata_xclbin(design, dataclasses.replace(placement, banks=banks)))
    result = run(bad)
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    assert f"argument '{other}' is in memory group" in result.stderr
    assert f"shares the buffer of '{first}'" in result.stderr


def test_lint_catches_a_cache_split_over_two_banks(design, decode_project):
    from codegen_hls.lint import lint_design, lint_shared_banks
    from codegen_hls.vitis_files import place
    from tvm_spatial.devices import get_device

    cfg = (decode_project / "connectivity.cfg").read_text()
    placement = place(design, get_device(design.device))
    assert lint_shared_banks(design, connectivity=cfg) == []
    assert lint_design(design, placement.banks, cfg) == []
    caches = _cache_groups(design)
    vk, port = caches[max(caches)][-1]  # the last port of the second cache
    line = next(ln for ln in cfg.splitlines() if ln.startswith(f"sp={vk}_1.{port}:"))
    bank = line.rsplit(":", 1)[1]
    other = next(b for b in get_device(design.device).memory_banks if b != bank)
    broken = cfg.replace(line, f"sp={vk}_1.{port}:{other}")
    found = lint_shared_banks(design, connectivity=broken)
    assert [(f.rule, f.kernel, f.line) for f in found] == [
        ("m_axi-shared-bank", "connectivity.cfg", cfg.splitlines().index(line) + 1)]
    assert f"'{vk}.{port}' is on {other}" in found[0].message
    assert [f.rule for f in lint_design(design, placement.banks, broken)] == ["m_axi-shared-bank"]
    # a cache port with no sp= line at all
    missing = lint_shared_banks(design, connectivity=cfg.replace(line + "\n", ""))
    assert [f.rule for f in missing] == ["m_axi-shared-bank"] and "has no bank" in missing[0].message
    # the placement itself (no cfg text) is checked the same way
    banks = dict(placement.banks)
    banks[(vk, port)] = other
    assert [f.rule for f in lint_shared_banks(design, banks)] == ["m_axi-shared-bank"]


def test_xrt_call_passes_one_buffer_per_cache_and_copies_it_back(design, monkeypatch, tmp_path):
    """run_kernel_on_xrt (what the VM calls in xrt mode) hands the runner each cache once,
    by its first port, and copies the one returned cache into the caller's tensor: every
    layer's rows arrive together, nothing to merge."""
    from codegen_hls import xrt_runtime

    (kernel,) = design.kernels
    caches = _cache_groups(design)
    by_name = {p.name: p for p in kernel.ports}
    tensors = []
    for i in range(kernel.num_args):
        port = next(p for p in kernel.ports if p.arg == i)
        tensors.append(tvm.runtime.tensor(np.zeros(port.arg_shape, port.dtype)))
    seen = {}

    def fake_run(self, name, inputs):
        seen.update(inputs)
        outputs = {}
        for ports in caches.values():
            first = by_name[ports[0][1]]
            cache = inputs[first.name].copy()
            cache[:, :, :, 3, :] = first.arg + 1  # "every layer wrote row 3"
            outputs[first.name] = cache
        for p in kernel.ports:
            if p.direction == "out":
                outputs[p.name] = np.full(p.shape, 7, p.dtype)
        return outputs

    monkeypatch.setattr(xrt_runtime.XRTRunner, "run", fake_run)
    monkeypatch.setenv(xrt_runtime.XCLBIN_ENV, str(tmp_path / "unused.xclbin"))
    xrt_runtime.run_kernel_on_xrt(kernel.name, design.to_json(), *tensors)
    sharing = {name for ports in caches.values() for _, name in ports[1:]}
    assert not sharing & set(seen)
    assert {n for ports in caches.values() for _, n in ports[:1]} <= set(seen)
    for ports in caches.values():
        first = by_name[ports[0][1]]
        got = tensors[first.arg].numpy()
        assert (got[:, :, :, 3, :] == first.arg + 1).all() and not np.delete(got, 3, axis=3).any()
    out = next(p for p in kernel.ports if p.direction == "out")
    assert (tensors[out.arg].numpy() == 7).all()


def test_emulation_unit_is_werror_clean(design, tmp_path):
    """The kernel as Vitis sees it and the emulation TU with its in-place entry point."""
    tu = emulation.write_sources(design, tmp_path)
    for kernel in design.kernels:
        proc = _compile(_strict_kernel_args(tmp_path / kernel.filename), tmp_path)
        assert proc.returncode == 0 and not proc.stderr, _explain(proc)
    proc = _compile([*emulation.base_flags(), "-O1", "-c", *emulation.STRICT_FLAGS, str(tu), "-o", os.devnull],
                    tmp_path)
    assert proc.returncode == 0 and not proc.stderr, _explain(proc)
    assert "return_args(args, written, 3, result)" in tu.read_text()


def test_codegen_is_deterministic(design):
    again = tvm_spatial.design_of(_build_decode())
    assert again.to_json() == design.to_json()


SANITIZED_OK = "SANITIZED-IN-PLACE-DECODE-MATCHES"
SANITIZED_CHILD = f"""
    from pathlib import Path
    import numpy as np
    import tvm
    from tvm import relax
    import tvm_spatial

    fixtures = Path({str(FIXTURES)!r})
    data = np.load(fixtures / "gpt2_tiny_generate.npz")
    names = [k.split(":", 2)[2] for k in data.files if k.startswith("in:decode:")]
    ex = relax.build(tvm_spatial.frontend.from_onnx(fixtures / "gpt2_tiny_decode.onnx"), target="vitis_spatial")
    vm = relax.VirtualMachine(ex, tvm.cpu(), memory_cfg="naive")  # exact-size buffers for ASan
    args = {{n: tvm.runtime.tensor(data["in:decode:" + n]) for n in names}}
    for step in range(3):  # the same cache tensors, updated in place, step after step
        out = vm["main"](*[args[n] for n in names])
        assert out[1].same_as(args["past_key"]) and out[2].same_as(args["past_value"])
        if step == 0:
            for got, n in zip(out, ("logits", "present_key", "present_value")):
                np.testing.assert_allclose(got.numpy(), data["out:decode:" + n], rtol=1e-4, atol=1e-4)
        args["position"] = tvm.runtime.tensor(np.array([int(args["position"].numpy()[0]) + 1], "int64"))
        args["input_ids"] = tvm.runtime.tensor(np.array([[int(out[0].numpy().argmax())]], "int64"))
    print("checked decode", flush=True)
    print("{SANITIZED_OK}", flush=True)
"""


def test_in_place_decode_runs_clean_under_sanitizers(tmp_path):
    """ASan+UBSan over three in-place steps."""
    proc = _run_sanitized(SANITIZED_CHILD, tmp_path)
    _assert_clean_sanitized_run(proc, tmp_path, SANITIZED_OK, ["decode"])


def test_decode_in_xrt_mode_passes_the_cache_both_ways(decode_ex, monkeypatch, tmp_path):
    """Through XRT (the noop shim computes nothing) the in-place call still returns the
    caches it was given: each cache goes to the host as input and comes back as output,
    one buffer for all its ports (the host program's inout handling, end to end)."""
    import test_xrt_host

    if test_xrt_host.pytestmark.args[0]:
        pytest.skip(test_xrt_host.pytestmark.kwargs["reason"])
    from codegen_hls.xclbin import metadata_xclbin

    root = tmp_path / "xilinx_xrt"
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "libxrt_noop.so.2").symlink_to(test_xrt_host.NOOP_LIB)
    monkeypatch.setenv("XILINX_XRT", str(root))
    monkeypatch.setenv("XCL_EMULATION_MODE", "noop")
    for key in ("TVM_SPATIAL_RUNTIME", "TVM_SPATIAL_XCLBIN", "TVM_SPATIAL_DEVICE_INDEX"):
        monkeypatch.delenv(key, raising=False)
    xclbin = tmp_path / "design.xclbin"
    xclbin.write_bytes(metadata_xclbin(tvm_spatial.design_of(decode_ex)))
    _, names, inputs = _inputs()
    args = {n: tvm.runtime.tensor(v) for n, v in inputs.items()}
    vm = relax.VirtualMachine(decode_ex, tvm.cpu())["main"]
    with tvm_spatial.runtime_mode("xrt", xclbin=xclbin):
        logits, key, value = vm(*[args[n] for n in names])
    assert key.same_as(args["past_key"]) and value.same_as(args["past_value"])
    data, _, _ = _inputs()
    assert logits.shape == data["out:decode:logits"].shape
    # the shim computes nothing: the logits are whatever the output buffer held (the host
    # heap's, not zeros to count on: glibc's MALLOC_PERTURB_ fills them), not the model's
    assert not np.allclose(logits.numpy(), data["out:decode:logits"], atol=1e-3)


# -- a hand-written graph: the pass matches exactly the slot-write pattern ---------------

SMALL = dict(layers=2, heads=2, context=5, head_dim=3)


def _slot_write_module(order=(0, 1)):
    """main(position, past_key, new) -> (sum of the layers' K, present_key), written the way
    hf_export's decode graph writes its cache; ``order``: the layers as stacked."""
    L, H, T, D = SMALL["layers"], SMALL["heads"], SMALL["context"], SMALL["head_dim"]
    position = relax.Var("position", relax.TensorType((1,), "int64"))
    past = relax.Var("past_key", relax.TensorType((L, 1, H, T, D), "float32"))
    new = relax.Var("new", relax.TensorType((1, H, 1, D), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [position, past, new]):
        with bb.dataflow():
            hit = bb.emit(relax.op.equal(relax.const(np.arange(T, dtype="int64")), position))
            mask = bb.emit(relax.op.reshape(hit, (1, 1, T, 1)))
            ks = [bb.emit(relax.op.where(mask, new, bb.emit(relax.op.take(past, relax.const(l, "int64"), axis=0))))
                  for l in range(L)]
            total = bb.emit(relax.op.add(ks[0], ks[1]))
            stacked = [bb.emit(relax.op.expand_dims(ks[l], [0])) for l in order]
            present = bb.emit(relax.op.concat(stacked, axis=0))
            out = bb.emit_output(relax.Tuple([total, present]))
        bb.emit_func_output(out)
    return bb.get()


def _slot_write_inputs():
    rng = np.random.default_rng(7)
    L, H, T, D = SMALL["layers"], SMALL["heads"], SMALL["context"], SMALL["head_dim"]
    return [np.array([3], "int64"), rng.standard_normal((L, 1, H, T, D)).astype("float32"),
            rng.standard_normal((1, H, 1, D)).astype("float32")]


def test_hand_written_slot_write_is_updated_in_place_and_equals_llvm():
    inputs = _slot_write_inputs()
    ex = relax.build(_slot_write_module(), target="vitis_spatial")
    (kernel,) = tvm_spatial.design_of(ex).kernels
    assert [p.op for p in kernel.processes].count("kv_update") == 2
    assert {p.direction for p in kernel.ports if p.name.startswith("past_key")} == {"inout"}
    ref = relax.VirtualMachine(relax.build(_slot_write_module(), target="llvm"), tvm.cpu())["main"](
        *[tvm.runtime.tensor(v) for v in inputs])
    args = [tvm.runtime.tensor(v) for v in inputs]
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](*args)
    np.testing.assert_allclose(got[0].numpy(), ref[0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(got[1].numpy(), ref[1].numpy(), rtol=1e-6)
    assert got[1].same_as(args[1])
    want = inputs[1].copy()  # numpy: row 3 of every layer is the new row
    want[:, 0, :, 3, :] = inputs[2][0, :, 0, :]
    np.testing.assert_array_equal(got[1].numpy(), want)


def test_layers_stacked_out_of_order_are_not_updated_in_place():
    """present = stack(K_1, K_0) is not "past with a row written": the pass leaves it, and
    the design computes and writes the whole output as before (no inout port)."""
    inputs = _slot_write_inputs()
    mod = _slot_write_module(order=(1, 0))
    assert find_cache_updates(relax.transform.FoldConstant()(mod)["main"]) == []
    ex = relax.build(mod, target="vitis_spatial")
    (kernel,) = tvm_spatial.design_of(ex).kernels
    assert "kv_update" not in [p.op for p in kernel.processes]
    assert not any(p.direction == "inout" for p in kernel.ports)
    ref = relax.VirtualMachine(relax.build(mod, target="llvm"), tvm.cpu())["main"](
        *[tvm.runtime.tensor(v) for v in inputs])
    args = [tvm.runtime.tensor(v) for v in inputs]
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](*args)
    np.testing.assert_allclose(got[1].numpy(), ref[1].numpy(), rtol=1e-6)
    assert not got[1].same_as(args[1])
    np.testing.assert_array_equal(args[1].numpy(), inputs[1])  # the input is left alone
