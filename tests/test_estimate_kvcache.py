"""The KV cache of a decode design in the analytical model: per layer on-chip or in HBM.

References are independent of the model: cache sizes come from the ONNX graph's input
shapes (onnx), URAM/BRAM capacities from UG573's figures written out here, and the
traffic difference between placements from the sizes alone.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import onnx
import pytest

import tvm_spatial
from tvm_spatial.devices import get_device
from tvm_spatial.estimate import ModelConfig, design_from_onnx, design_work, estimate_work
from tvm_spatial.estimate.kvcache import KVCacheWork, place_kv_cache

FIXTURES = Path(__file__).parent / "fixtures"
DECODE = FIXTURES / "gpt2_tiny_decode.onnx"


@pytest.fixture(scope="module", params=["unroll", "reuse"])
def decode_design(request):
    """The decode design with every layer's processes of its own, and with one layer's
    hardware called once per layer (relax_passes.layer_reuse)."""
    with tvm_spatial.allocation(layers=request.param):
        design = design_from_onnx(DECODE)
    assert max(k.calls for k in design.kernels) == (_cache_shape()[0] if request.param == "reuse" else 1)
    return design


def _cache_shape():
    model = onnx.load(str(DECODE), load_external_data=False)
    (inp,) = [i for i in model.graph.input if i.name == "past_key"]
    return [d.dim_value for d in inp.type.tensor_type.shape.dim]


def test_each_layer_cache_is_placed_where_the_design_keeps_it(decode_design):
    """The decode design keeps its cache in an inout m_axi buffer (updated in place, one
    row per layer): the estimate and the report say HBM for every layer, not URAM."""
    layers, _, heads, ctx, head_dim = _cache_shape()
    cache_ports = [p for k in decode_design.kernels for p in k.ports if p.name.startswith(("past_key", "past_value"))]
    assert cache_ports and all(p.direction == "inout" for p in cache_ports)
    est = tvm_spatial.estimate(decode_design)
    assert [k.layer for k in est.kv_cache] == list(range(layers))
    for k in est.kv_cache:
        assert k.bytes == 2 * heads * ctx * head_dim * 4  # K and V, fp32
        assert k.where == "hbm" and not k.on_chip and k.uram == 0 == k.bram18k
    text = str(est)
    assert "KV cache per layer" in text and f"{layers} layer(s) in HBM" in text and "URAM (" not in text
    html = est.to_html()
    assert "<h2>KV cache per layer</h2>" in html and html.count("<td>HBM</td>") == layers


def test_onchip_what_if_takes_uram(decode_design):
    """Asked for (``kv_cache="onchip"``), the model prices the caches in URAM instead:
    a few KB, UG573's URAM288 (4096 x 72 bits, two fp32 per word), on the SLR's bill."""
    layers, _, heads, ctx, head_dim = _cache_shape()
    work = design_work(decode_design)
    dev = get_device("u280")
    on = estimate_work(work, dev, ModelConfig(kv_cache="onchip"))
    off = estimate_work(work, dev, ModelConfig(kv_cache="auto"))
    for k in on.kv_cache:
        assert k.where == "uram" and k.uram == 2 * math.ceil(heads * ctx * head_dim / (4096 * 2))
    assert on.total.uram - off.total.uram == sum(k.uram for k in on.kv_cache)
    assert f"{layers} layer(s) in URAM" in str(on)


def test_decode_reads_an_offchip_cache_over_hbm(decode_design):
    """Off-chip, a token reads each layer's K and V once and appends a row to each; on-chip
    none of that crosses HBM, and decode cannot be faster off-chip."""
    layers, _, heads, ctx, head_dim = _cache_shape()
    work = design_work(decode_design)
    dev = get_device("u280")
    on = estimate_work(work, dev, ModelConfig(kv_cache="onchip"))
    off = estimate_work(work, dev, ModelConfig(kv_cache="auto"))
    assert all(k.where == "hbm" for k in off.kv_cache)
    reads = layers * 2 * heads * ctx * head_dim * 4
    appends = layers * 2 * heads * head_dim * 4
    assert off.decode_bytes - on.decode_bytes == pytest.approx(reads + appends, abs=len(work.processes))
    assert off.decode_cycles >= on.decode_cycles
    # the in-place updates move it: each reads its layer's K (or V) through the cache port
    updates = [p for p in off.processes if p.op == "kv_append"]
    assert sum(p.calls for p in updates) == 2 * layers  # one per layer, or one called per layer
    assert all(p.decode_bytes >= heads * ctx * head_dim * 4 for p in updates)


def test_each_in_place_update_reads_its_slice_and_writes_one_row(decode_design):
    """Per token an update moves its own layer's K (or V) slice (heads x context x
    head_dim, which its ``take`` reads to stream on to the attention) and one row of it
    (heads x head_dim) -- not the whole cache -- each on its own layer; the attention reads
    the slice from that stream, not from the cache."""
    layers, _, heads, ctx, head_dim = _cache_shape()
    work = design_work(decode_design)
    updates = [p for p in work.processes if p.op == "kv_append"]
    assert sum(p.calls for p in updates) == 2 * layers
    # a reused layer's update serves its layers in turn, one slice and one row per call
    served = [(layer + call, elements) for p in updates for layer, elements in p.cache_traffic
              for call in range(p.calls)]
    want = [(l, e) for l in range(layers) for _ in ("K", "V") for e in (heads * ctx * head_dim, heads * head_dim)]
    assert sorted(served) == sorted(want)
    readers = [p for p in work.processes if p.op.startswith("attention")]
    assert readers and all(p.cache_traffic and all(e == 0 for _, e in p.cache_traffic) for p in readers)
    est = tvm_spatial.estimate(decode_design)
    moved = sum(p.decode_bytes * p.calls for p in est.processes if p.op == "kv_append")
    other_ports = sum(p.port_bytes * p.calls for p in updates)  # position, the slot numbers
    # fp32 slices and rows, K and V of every layer: far from a whole-cache copy per layer
    assert moved - other_ports == pytest.approx(2 * layers * heads * (ctx + 1) * head_dim * 4, abs=len(updates))


def test_quantized_cache_is_int8(decode_design):
    est = tvm_spatial.estimate(decode_design, precision="w8a8")
    _, _, heads, ctx, head_dim = _cache_shape()
    assert all(k.bytes == 2 * heads * ctx * head_dim for k in est.kv_cache)


def _gpt2_small_caches(context: int, dtype: str = "float32") -> list[KVCacheWork]:
    return [KVCacheWork(layer, layer // 4, 12, context, 64, dtype) for layer in range(12)]


def test_a_long_context_goes_to_hbm():
    """GPT2-small at a 1024-token context: 6.3 MB of fp32 K and V per layer. With an empty
    U280 SLR (320 URAM, 1,344 BRAM18 at 85 %) one layer per SLR fits in URAM, the rest do
    not fit in the URAM or BRAM left, so they go to HBM."""
    dev = get_device("u280")
    free = [{"uram": dev.slr(i).uram * 0.85, "bram18k": dev.slr(i).bram18k * 0.85} for i in range(dev.slrs)]
    placed = place_kv_cache(_gpt2_small_caches(1024), free)
    per_layer_uram = 2 * math.ceil(12 * 1024 * 64 / (4096 * 2))  # 192
    assert per_layer_uram == 192 and all(k.bytes == 2 * 12 * 1024 * 64 * 4 for k in placed)
    assert [k.where for k in placed] == (["uram"] + ["hbm"] * 3) * 3
    assert all(k.uram == 192 for k in placed if k.where == "uram")
    # int8 (a quantized design): 22 URAM per K or V, six layers fit in an SLR's 272
    placed8 = place_kv_cache(_gpt2_small_caches(1024, "int8"), free)
    assert all(k.on_chip for k in placed8)
    # nothing left after the processes: all off-chip; the DDR card says so
    none = [{"uram": 0, "bram18k": 0}] * 3
    assert {k.where for k in place_kv_cache(_gpt2_small_caches(1024), none, "ddr")} == {"ddr"}


def test_the_decode_design_at_a_long_context_moves_its_cache_to_hbm(decode_design):
    """The fixture's design with its cache stretched to 64 K positions (through the model's
    input, not by re-exporting): it no longer fits on-chip and decode pays its bytes."""
    work = design_work(decode_design)
    layers, _, heads, ctx, head_dim = _cache_shape()
    long_ctx = 65536
    scale = long_ctx // ctx
    slice_elements = heads * ctx * head_dim  # a layer's K (or V): what grows with the context
    procs = tuple(
        dataclasses.replace(p, cache_traffic=tuple((l, e * scale if e == slice_elements else e)
                                                   for l, e in p.cache_traffic))
        for p in work.processes
    )
    kv = tuple(dataclasses.replace(k, context=long_ctx) for k in work.kv_cache)
    long_work = dataclasses.replace(work, processes=procs, kv_cache=kv)
    est = estimate_work(long_work, get_device("u280"))
    assert [k.where for k in est.kv_cache] == ["hbm"] * layers
    assert est.decode_bytes >= layers * 2 * heads * long_ctx * head_dim * 4


def test_decode_takes_the_longest_chain_of_streams():
    """A dataflow region starts a process when its streams deliver: a diamond a -> (b, c)
    -> d takes a + max(b, c) + d; without streams (a workload by size) the processes are
    one chain; streams that loop back are a design error, reported."""
    from tvm_spatial.estimate.model import decode_path, longest_chain
    from tvm_spatial.estimate.workload import StreamWork

    def edge(src, dst):
        return StreamWork(f"{src}_{dst}", 32, 2, 1, 0, src, dst)

    cycles = {"a": 1.0, "b": 5.0, "c": 3.0, "d": 2.0}
    diamond = [edge("a", "b"), edge("a", "c"), edge("b", "d"), edge("c", "d")]
    assert decode_path(cycles, diamond) == 1 + 5 + 2
    assert longest_chain(cycles, diamond) == (1 + 5 + 2, ("a", "b", "d"))
    assert longest_chain(cycles, []) == (1 + 5 + 3 + 2, ("a", "b", "c", "d"))
    assert decode_path(cycles, [edge("a", "c"), edge("c", "d")]) == 1 + 3 + 2  # b alone, beside them
    assert decode_path(cycles, []) == 1 + 5 + 3 + 2
    assert decode_path(cycles, [edge("x", "a")]) == 1 + 5 + 3 + 2  # streams of another region
    with pytest.raises(ValueError, match="cycle"):
        decode_path(cycles, [*diamond, edge("d", "a")])
    # an unrolled stack: thousands of processes in one chain (no recursion limit)
    long = {f"p{i}": 1.0 for i in range(5000)}
    assert decode_path(long, [edge(f"p{i}", f"p{i + 1}") for i in range(4999)]) == 5000


def test_a_consumer_reads_a_stream_while_its_producer_writes_it():
    """Each process reads its input streams first and writes its outputs last, one FIFO
    word a cycle: a handoff of ``T`` words costs them once on a chain (``a + b - T``); two
    producers read in one loop (the attention's joint K/V read) overlap it with both; a
    consumer never finishes before its producer."""
    from tvm_spatial.estimate.model import decode_path, stream_handoffs
    from tvm_spatial.estimate.workload import StreamWork

    def stream(src, dst, elements, width):
        return StreamWork(f"{src}_{dst}", 32 * width, 2, elements, 0, src, dst, width=width)

    chain = [stream("a", "b", 64, 16)]  # 4 words
    assert stream_handoffs(chain) == {("a", "b"): 4.0}
    assert decode_path({"a": 10.0, "b": 7.0}, chain, stream_handoffs(chain)) == 10 + 7 - 4
    assert decode_path({"a": 10.0, "b": 7.0}, chain) == 10 + 7  # no handoff given: the old sum
    assert stream_handoffs(chain, tokens=2) == {("a", "b"): 2.0}  # per token of a longer design
    joint = [stream("k", "att", 160, 16), stream("v", "att", 160, 16)]
    cycles = {"k": 30.0, "v": 25.0, "att": 12.0}
    assert decode_path(cycles, joint, stream_handoffs(joint)) == 30 + 12 - 10
    wide = [stream("a", "b", 640, 16)]  # more words than the consumer's cycles: b ends with a
    assert decode_path({"a": 50.0, "b": 20.0}, wide, stream_handoffs(wide)) == 50


def test_a_prologue_runs_while_the_producers_compute():
    """A process's prologue (its stages that read no stream) starts with its region: the
    process finishes its rest after the later of its prologue and its producers; the
    chain starts at it when its prologue outlasts them. A handoff overlaps the read loop,
    which comes after the prologue."""
    from tvm_spatial.estimate.model import decode_path, longest_chain, stream_handoffs
    from tvm_spatial.estimate.workload import StreamWork

    chain = [StreamWork("a_b", 32, 2, 1, 0, "a", "b")]
    assert decode_path({"a": 10.0, "b": 7.0}, chain, prologue={"b": 4.0}) == 10 + 3
    assert longest_chain({"a": 10.0, "b": 20.0}, chain, prologue={"b": 15.0}) == (20.0, ("b",))
    assert longest_chain({"a": 10.0, "b": 20.0}, chain, prologue={"b": 9.0}) == (10 + 11, ("a", "b"))
    words = [StreamWork("a_b", 32 * 16, 2, 16 * 6, 0, "a", "b", width=16)]  # 6 words
    # b: prologue 4, then 5 more, its 6-word read loop among them: the overlap is those 5
    # (not 6), so b ends with a
    assert decode_path({"a": 10.0, "b": 9.0}, words, stream_handoffs(words), {"b": 4.0}) == 10.0
    assert decode_path({"a": 10.0, "b": 12.0}, words, stream_handoffs(words), {"b": 4.0}) == 10 + 8 - 6


def test_a_stream_written_early_is_there_when_its_producers_prologue_ends():
    """A stream written in its producer's prologue (``early``: a kv_append's old slice) is
    complete when that prologue ends, not when the producer does; a consumer that reads
    ``after`` transfers of other streams first has done that much before it needs a
    later one (its query arrives while it still reads K and V)."""
    from tvm_spatial.estimate.model import longest_chain, stream_handoffs
    from tvm_spatial.estimate.workload import StreamWork

    slice_ = StreamWork("a_c", 32 * 16, 2, 16 * 6, 0, "a", "c", width=16, early=True)  # 6 words, early
    query = StreamWork("b_c", 32 * 16, 2, 16 * 2, 0, "b", "c", width=16, after=6)  # read after the slice
    cycles, prologue = {"a": 20.0, "b": 10.0, "c": 30.0}, {"a": 15.0}
    streams = [slice_, query]
    # a's slice is there at 15, read beside its writes (6); b's query at 10, after 6 + 2 words
    assert longest_chain(cycles, streams, stream_handoffs(streams), prologue) == (15 - 6 + 30, ("a", "c"))
    late = [dataclasses.replace(slice_, early=False), query]  # written at a's end instead
    assert longest_chain(cycles, late, stream_handoffs(late), prologue)[0] == 20 - min(6, 5) + 30
    first = [slice_, dataclasses.replace(query, after=0)]  # the query read first: no credit for it
    slow = dict(cycles, b=40.0)
    assert longest_chain(slow, first, stream_handoffs(first), prologue)[0] == 40 - 2 + 30
    assert longest_chain(slow, streams, stream_handoffs(streams), prologue)[0] == 40 - 2 - 6 + 30


def test_the_cache_update_streams_its_slice_in_its_prologue(decode_design):
    """The attention merges the new row (``merge_row``), so the in-place update (a
    kv_append) needs no stream to stream its layer's slice as it was: it writes it before
    it reads the new row, the record says so (its prologue reads the cache port, its
    output streams are ``early``), and the model starts that slice with the region, not
    after the QKV linear."""
    _, _, heads, ctx, head_dim = _cache_shape()
    found = 0
    for kernel in decode_design.kernels:
        for p in kernel.processes:
            if p.op != "kv_append":
                continue
            found += 1
            cache = next(port.name for port in kernel.ports if port.direction == "inout" and port.name in p.inputs)
            assert cache in p.prologue_ports and p.prologue_io > 0
            body = kernel.source[kernel.source.index(f"void {p.name}("):]
            body = body[:body.index("\n}\n")]
            assert body.index(".write(") < body.index(".read()")
            out = [s for s in kernel.streams if s.producer == p.name]
            assert out and all(s.early for s in out)
            assert p.prologue_io == sum(s.elements // s.width for s in out[:1])
    assert found
    work = design_work(decode_design)
    est = tvm_spatial.estimate(decode_design)
    for w in work.processes:
        if w.op == "kv_append":
            assert w.prologue_cache == heads * ctx * head_dim
            pe = est.process(w.name)
            assert 0 < pe.decode_prologue < pe.decode_cycles


def test_k_and_v_updates_run_side_by_side(decode_design):
    """The two cache updates of a layer read no stream of each other: a token waits for the
    slower of them, not for both -- the decode latency is below the processes' sum by at
    least one update's cycles per call -- and for no more of either than its prologue."""
    est = tvm_spatial.estimate(decode_design)
    work = design_work(decode_design)
    updates = [p for p in est.processes if p.op == "kv_append"]
    names = {p.name for p in updates}
    # premise: no stream path joins them (each is fed by its own head split)
    assert not any(s.producer in names and s.consumer in names for s in work.streams)
    total = sum(p.decode_cycles * p.calls for p in est.processes)
    pairs = {}  # (region, layer) -> its K and V updates
    for p in updates:
        pairs.setdefault((p.kernel, p.layer), []).append(p.decode_cycles * p.calls)
    assert pairs and all(len(v) == 2 for v in pairs.values())
    assert est.decode_cycles <= total - sum(min(v) for v in pairs.values()) + 1e-6
    # and the attention reads the old slices while the updates stream them, in their
    # prologues: a token waits on no update's new-row read or row write -- charged only
    # its prologue, every update leaves the decode latency as it is
    _, _, heads, ctx, head_dim = _cache_shape()
    slice_stream = [s for s in work.streams if s.producer in names and s.elements == heads * ctx * head_dim]
    assert len(slice_stream) == len(updates), "each update streams its whole slice on"
    from tvm_spatial.estimate.model import longest_chain, stream_handoffs

    def decode(charge):
        handoff = stream_handoffs(work.streams, work.tokens)
        total = 0.0
        for k in dict.fromkeys(p.kernel for p in est.processes):
            mine = [p for p in est.processes if p.kernel == k]
            total += mine[0].calls * longest_chain({p.name: charge(p) for p in mine}, work.streams, handoff,
                                                   {p.name: p.decode_prologue for p in mine}, work.tokens)[0]
        return total

    assert decode(lambda p: p.decode_cycles) == pytest.approx(est.decode_cycles)
    assert all(p.decode_prologue < p.decode_cycles for p in updates)
    assert decode(lambda p: p.decode_prologue if p.name in names else p.decode_cycles) == pytest.approx(
        est.decode_cycles)
    # the report says which processes a token does not wait on: at least one update a layer
    beside = [p for p in updates if p.name not in est.decode_chain]
    assert len(beside) >= len(pairs)
    from tvm_spatial.estimate.report import process_table

    from rich.console import Console

    console = Console(width=400, record=True)
    console.print(process_table(est, limit=None))
    rows = console.export_text().splitlines()
    for p in beside:
        short = p.name.split("_p", 1)[-1]
        assert any(short in row and " beside" in row for row in rows), short
