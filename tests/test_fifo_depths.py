"""Stream depths by bounded-FIFO simulation (codegen_hls/fifo_depths.py), and the lint rule
that checks the printed depths the same way from the C++ text (codegen_hls/lint.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import tvm_spatial
from codegen_hls.fifo_depths import Deadlock, Read, ReadEach, Write, deadlock, size_fifos
from codegen_hls.lint import lint_source
from tvm_spatial.estimate import design_from_onnx

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def gpt2_blocked_design():
    with tvm_spatial.allocation(rows=8):
        return design_from_onnx(FIXTURES / "gpt2_tiny.onnx")


def _fork_join(first: str, blocks: int = 4, chunk: int = 8):
    """A producer sends each block to two streams at once; the consumer reads ``first``
    completely, then the other: the other must hold everything."""
    other = "b" if first == "a" else "a"
    return {
        "producer": [Write(("a", "b"), blocks * chunk)],
        "consumer": [Read(first, blocks * chunk), Read(other, blocks * chunk)],
    }


def test_a_consumer_draining_one_branch_first_needs_the_other_whole():
    depths = size_fifos("k", _fork_join("a"), {"a": 2, "b": 2})
    assert depths == {"a": 2, "b": 32}
    assert deadlock(_fork_join("a"), {"a": 2, "b": 31}) is not None
    assert deadlock(_fork_join("a"), depths) is None


def test_blocks_read_in_turn_need_one_block():
    """A producer writing a block of q then a block of k; the consumer reading k's block
    before q's: q holds one block, k stays shallow (they hand over in lockstep)."""
    blocks, chunk = 4, 16
    programs = {
        "split": [op for _ in range(blocks) for op in (Write(("q",), chunk), Write(("k",), chunk))],
        "attention": [op for _ in range(blocks) for op in (Read("k", chunk), Read("q", chunk))],
    }
    assert size_fifos("k", programs, {"q": 2, "k": 2}) == {"q": chunk, "k": 2}


def test_a_chain_in_lockstep_stays_shallow():
    programs = {
        "a": [Write(("s1",), 1000)],
        "b": [Read("s1", 1000), Write(("s2",), 1000)],
        "c": [Read("s2", 1000)],
    }
    assert size_fifos("k", programs, {"s1": 2, "s2": 2}) == {"s1": 2, "s2": 2}


def test_a_real_deadlock_is_an_error_not_a_deeper_fifo():
    """Two processes each waiting to read what the other writes after: no depth helps."""
    programs = {"p": [Read("y", 4), Write(("x",), 4)], "q": [Read("x", 4), Write(("y",), 4)]}
    with pytest.raises(Deadlock, match="p reads y.*q reads x"):
        size_fifos("k", programs, {"x": 2, "y": 2})


def test_an_unknown_stream_is_an_error():
    with pytest.raises(Exception, match="has no depth"):
        size_fifos("k", {"p": [Write(("x",), 1)]}, {})


def test_built_designs_pass_the_text_check_and_a_shallower_stream_fails_it(gpt2_blocked_design):
    """The lint reads each process's stream program off the printed C++ (independently of
    the codegen's own plan) and simulates it with the pragma depths: the built design
    finishes; halving the stream the simulation made deepest for deadlock freedom (the
    queries waiting beside K and V) makes it deadlock."""
    kernel = gpt2_blocked_design.kernels[0]
    assert lint_source(kernel.name, kernel.source, kernel) == []
    query = next(s for s in kernel.streams if "split" in s.producer and "attention" in s.consumer and s.depth > 2)
    shallow = re.sub(rf"variable={query.name} depth=\d+", f"variable={query.name} depth={query.depth // 2}",
                     kernel.source)
    findings = lint_source(kernel.name, shallow, kernel)
    assert [f.rule for f in findings] == ["stream-depth"], findings
    assert f"stream '{query.name}' has depth {query.depth // 2}" in findings[0].message
    assert "deadlocks" in findings[0].message


def test_lockstep_reads_of_two_writers_need_no_depth():
    """Two processes each writing a stream that one loop reads a transfer of each per
    cycle (a decode attention's K and V): they hand over side by side at the shallow depth."""
    programs = {"k": [Write(("a",), 64)], "v": [Write(("b",), 64)], "attention": [ReadEach(("a", "b"), 64)]}
    assert size_fifos("r", programs, {"a": 2, "b": 2}) == {"a": 2, "b": 2}


def test_lockstep_reads_of_one_writer_of_both_need_the_first_whole():
    """One process writing all of ``a`` before ``b``, read in lockstep: ``a`` must hold
    everything (why the codegen reads a prefill's K and V, which its split writes one after
    the other, in turn instead); at any less the region deadlocks, the reader named."""
    programs = {"split": [Write(("a",), 64), Write(("b",), 64)], "attention": [ReadEach(("a", "b"), 64)]}
    assert size_fifos("r", programs, {"a": 2, "b": 2}) == {"a": 64, "b": 2}
    stuck = deadlock(programs, {"a": 63, "b": 2})
    assert stuck is not None and "attention reads a/b" in stuck.waits and stuck.full == ("a",)


def test_decode_attention_reads_k_and_v_in_one_loop():
    """In the decode fixture's attention, K and V (from the two cache updates) arrive in one
    pipelined loop, a packet of each per iteration, before its other streams (the updates
    write them in their prologues); the lint, reading the program off the text, agrees
    that the region finishes at the printed depths."""
    with tvm_spatial.allocation(layers="reuse"):
        design = design_from_onnx(FIXTURES / "gpt2_tiny_decode.onnx")
    (kernel,) = [k for k in design.kernels if any(p.op == "attention" for p in k.processes)]
    (attention,) = [p for p in kernel.processes if p.op == "attention"]
    updates = [p.name for p in kernel.processes if p.op == "kv_append"]
    fed = [s for s in kernel.streams if s.consumer == attention.name and s.producer in updates]
    assert len(fed) == 2 and fed[0].width == fed[1].width
    body = kernel.source[kernel.source.index(f"void {attention.name}("):]
    body = body[: body.index("\n}\n")]
    reads = [re.search(rf"= {s.name}\.read\(\);", body) for s in fed]
    assert all(reads)
    between = body[min(r.start() for r in reads): max(r.start() for r in reads)]
    assert "for (" not in between and "}" not in between  # one loop body holds both reads
    # before its query and the new rows: the cache updates write the old slices early
    others = [s for s in kernel.streams if s.consumer == attention.name and s not in fed]
    assert others and all(s.early for s in fed) and not any(s.early for s in others)
    assert all(body.index(f"= {s.name}.read();") > max(r.start() for r in reads) for s in others)
    assert all(s.after >= fed[0].elements // fed[0].width for s in others) and all(s.after == 0 for s in fed)
    # its copy loops: K and V counted once, q's and the output's as before
    assert attention.stream_io < 2 * fed[0].elements // fed[0].width + 1
    assert lint_source(kernel.name, kernel.source, kernel) == []
