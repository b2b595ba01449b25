"""Synthesizability lint: real kernels pass; each seeded defect is caught with its rule and line."""

from __future__ import annotations

import dataclasses

import pytest
from tvm import relax

import tvm_spatial
from codegen_hls.design import Design, Kernel, Port
from codegen_hls.lint import check_design, lint_design, lint_source, trip_count
from codegen_hls.project import write_project
from codegen_hls.vitis_files import place
from tvm_spatial import examples
from tvm_spatial.devices import get_device
from tvm_spatial.errors import LintError, SpatialError

from test_models import load_fixture
from test_project import make_design
from tvm_spatial.estimate import design_from_onnx

# A two-process dataflow kernel in the printer's style; the cases below each break one rule.
GOOD = """\
#include "tvm_spatial_hls.h"
// a comment saying new, delete, while and std::vector must not count
static void produce(const float a[16], hls::stream<float>& s) {
  for (int i = 0; i < 16; ++i) {
    #pragma HLS PIPELINE II=1
    s.write(a[i]);
  }
}

static void consume(hls::stream<float>& s, float c[16]) {
  for (int64_t i = 0; i < 4; ++i) {
    for (int64_t j = 0; j < 4; ++j) {
      c[i * 4 + j] = s.read();
    }
  }
}

extern "C" void pipe(const float a[16], float c[16]) {
  #pragma HLS INTERFACE m_axi port=a offset=slave bundle=gmem0 depth=16
  #pragma HLS INTERFACE m_axi port=c offset=slave bundle=gmem1 depth=16
  #pragma HLS INTERFACE s_axilite port=return
  #pragma HLS DATAFLOW
  hls::stream<float> s("s while new");
  #pragma HLS STREAM variable=s depth=2
  produce(a, s);
  consume(s, c);
}
"""

PORTS = (Port("a", "float32", (16,), "in", "gmem0"), Port("c", "float32", (16,), "out", "gmem1"))


def design_of_source(source: str, ports=PORTS) -> Design:
    return Design("u280", (Kernel("pipe", source, ports, ("copy",)),), "#include <cstdint>\n")


def line_of(source: str, needle: str) -> int:
    lines = [i for i, text in enumerate(source.splitlines(), start=1) if needle in text]
    assert len(lines) == 1, (needle, lines)
    return lines[0]


def findings(source: str, ports=PORTS, banks="placed"):
    design = design_of_source(source, ports)
    if banks == "placed":
        banks = place(design, get_device("u280")).banks
    return [(f.rule, f.line) for f in lint_design(design, banks)]


def test_good_kernel_passes():
    assert findings(GOOD) == []


def mutate(old: str, new: str) -> str:
    assert GOOD.count(old) == 1, old
    return GOOD.replace(old, new)


CASES = [
    # (rule, replaced text, replacement, text on the reported line)
    ("heap", "  for (int i = 0; i < 16; ++i) {\n    #pragma",
     "  float* tmp = new float[16];\n  for (int i = 0; i < 16; ++i) {\n    #pragma", "new float"),
    ("heap", "      c[i * 4 + j] = s.read();", "      c[i * 4 + j] = s.read();\n      free(c);", "free(c)"),
    ("stream-balance", "for (int64_t j = 0; j < 4; ++j)", "for (int64_t j = 0; j < 2; ++j)", 'hls::stream<float> s('),
    ("stream-balance", "  consume(s, c);\n", "", 'hls::stream<float> s('),
    ("stream-balance", "  produce(a, s);\n", "", 'hls::stream<float> s('),
    ("m_axi-bundle", "offset=slave bundle=gmem1 depth=16", "offset=slave depth=16", "port=c offset"),
    ("m_axi-bundle", "offset=slave bundle=gmem1 depth=16", "offset=slave bundle=gmem7 depth=16", "port=c offset"),
    ("m_axi-port", "  #pragma HLS INTERFACE m_axi port=c offset=slave bundle=gmem1 depth=16\n", "",
     'extern "C" void pipe'),
    ("unbounded-loop", "for (int i = 0; i < 16; ++i) {", "int i = 0;\n  while (i < 16) {", "while (i < 16)"),
    ("unbounded-loop", "for (int i = 0; i < 16; ++i) {", "for (int i = 0; i < a[0]; ++i) {", "a[0]; ++i"),
    ("unbounded-loop", "for (int i = 0; i < 16; ++i) {", "for (int i = 0; ; ++i) {", "for (int i = 0; ; ++i)"),
    ("recursion", "      c[i * 4 + j] = s.read();", "      c[i * 4 + j] = s.read();\n      consume(s, c);",
     "      consume(s, c);"),
    ("virtual", "static void produce(", "struct Base { virtual int f(); };\nstatic void produce(", "virtual"),
    ("std-container", "static void produce(", "static std::vector<float> scratch;\nstatic void produce(",
     "static std::vector"),
    ("std-container", '#include "tvm_spatial_hls.h"', '#include "tvm_spatial_hls.h"\n#include <vector>',
     "#include <vector>"),
    ("unsupported-type", "s.write(a[i]);", "s.write(a[i]);\n    long double wide = 0;", "long double"),
    ("unsupported-type", "s.write(a[i]);", 's.write(a[i]);\n    std::cout << a[i];', "std::cout"),
]


@pytest.mark.parametrize("rule, old, new, marker", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_seeded_defect_is_caught_with_rule_and_line(rule, old, new, marker):
    bad = mutate(old, new)
    found = findings(bad)
    assert (rule, line_of(bad, marker)) in found, found
    with pytest.raises(LintError) as info:
        check_design(design_of_source(bad), place(design_of_source(bad), get_device("u280")).banks)
    assert f"kernel 'pipe', line {line_of(bad, marker)}: [{rule}]" in str(info.value)
    assert isinstance(info.value, SpatialError)


def test_port_without_bank_and_bundle_split_over_banks():
    assert ("m_axi-bank", line_of(GOOD, "port=c offset")) in findings(GOOD, banks={("pipe", "a"): "HBM[0]"})
    shared = (PORTS[0], dataclasses.replace(PORTS[1], bundle="gmem0"))
    source = GOOD.replace("bundle=gmem1", "bundle=gmem0")
    banks = {("pipe", "a"): "HBM[0]", ("pipe", "c"): "HBM[1]"}
    assert ("m_axi-bank", line_of(source, "port=c offset")) in findings(source, shared, banks)


def test_design_port_missing_from_the_top_function():
    ports = PORTS + (Port("extra", "float32", (4,), "in", "gmem2"),)
    assert ("m_axi-port", line_of(GOOD, 'extern "C" void pipe')) in findings(GOOD, ports)


def test_trip_counts():
    assert trip_count("int i = 0 ; i < 16 ; ++ i") == 16
    assert trip_count("int64_t k = 2 ; k <= 10 ; k += 3") == 3
    assert trip_count("ap_uint < 8 > i = 0 ; i < ( int64_t ) 16 * 2 ; i ++") == 32
    assert trip_count("int i = 0 ; i < n ; ++ i") is None
    assert trip_count("int i = 0 ; i < 16 ; i += 0") is None


@pytest.fixture(scope="module", params=["mlp", "encoder_block"])
def example_design(request) -> Design:
    example = getattr(examples, request.param)()
    return tvm_spatial.design_of(relax.build(example.mod, target="vitis_spatial"))


def test_bundled_examples_pass(example_design):
    banks = place(example_design, get_device(example_design.device)).banks
    assert lint_design(example_design, banks) == []


def test_too_shallow_stream_between_related_processes_is_caught():
    """In BERT built in token blocks: attention reads all of K and V before its first query
    block, and Q, K and V come from the same layer norm, so the queries' stream must hold
    what the Q projection computes meanwhile; with the default depth the region deadlocks,
    and the finding is at that stream's pragma. (Unrolled: a reused layer's Q, K and V
    projections read its input port each, with no layer norm feeding all three.)"""
    path, *_ = load_fixture("bert_tiny")
    with tvm_spatial.allocation(rows=8, layers="unroll"):
        example_design = design_from_onnx(path)
    kernel = next(k for k in example_design.kernels if "attention" in k.ops)
    attention = next(p for p in kernel.processes if p.op == "attention")
    stream = next(s for s in kernel.streams if s.consumer == attention.name and s.depth > 2 and "linear" in s.producer)
    target = next(line for line in kernel.source.splitlines() if f"variable={stream.name} " in line)
    source = kernel.source.replace(target, target.split("depth=")[0] + "depth=2")
    bad = dataclasses.replace(example_design, kernels=tuple(
        dataclasses.replace(k, source=source) if k is kernel else k for k in example_design.kernels))
    found = lint_design(bad)
    assert [(f.rule, f.line) for f in found] == [("stream-depth", line_of(source, f"variable={stream.name} "))]
    assert f"stream '{stream.name}' has depth 2" in found[0].message


def test_write_project_refuses_a_kernel_that_fails_lint(tmp_path):
    design = make_design()
    vadd = design.kernels[0]
    bad = dataclasses.replace(vadd, source=vadd.source.replace("bundle=gmem1 ", ""))
    with pytest.raises(LintError, match=r"kernel 'vadd', line 5: \[m_axi-bundle\]"):
        write_project(dataclasses.replace(design, kernels=(bad,) + design.kernels[1:]), tmp_path / "p")
    assert list(tmp_path.iterdir()) == []


def test_common_header_is_linted():
    design = dataclasses.replace(design_of_source(GOOD), common_header="#include <string>\n")
    assert [(f.kernel, f.line, f.rule) for f in lint_design(design)] == [("tvm_spatial_hls.h", 1, "std-container")]


def test_lint_source_without_design_checks_pragmas_only():
    assert lint_source("pipe", GOOD) == []


JOIN = """\
#include "tvm_spatial_hls.h"
static void load(const float a[8], hls::stream<float>& s) {
  for (int i = 0; i < 8; ++i) {
    s.write(a[i]);
  }
}

static void fork(hls::stream<float>& in, hls::stream<float>& x, hls::stream<float>& y) {
  for (int i = 0; i < 8; ++i) {
    const float v = in.read();
    x.write(v);
    y.write(v);
  }
}

static void join(hls::stream<float>& x, hls::stream<float>& y, float c[16]) {
  for (int i = 0; i < 8; ++i) {
    c[i] = x.read();
  }
  for (int i = 0; i < 8; ++i) {
    c[8 + i] = y.read();
  }
}

extern "C" void pipe(const float a[8], const float b[8], float c[16]) {
  #pragma HLS INTERFACE m_axi port=a offset=slave bundle=gmem0 depth=8
  #pragma HLS INTERFACE m_axi port=b offset=slave bundle=gmem1 depth=8
  #pragma HLS INTERFACE m_axi port=c offset=slave bundle=gmem2 depth=16
  #pragma HLS DATAFLOW
  hls::stream<float> s("s");
  hls::stream<float> t("t");
  hls::stream<float> x("x");
  hls::stream<float> y("y");
  #pragma HLS STREAM variable=y depth=DEPTH
  load(a, s);
  fork(s, x, y);
  join(x, y, c);
}
"""


JOIN_PORTS = (
    Port("a", "float32", (8,), "in", "gmem0"),
    Port("b", "float32", (8,), "in", "gmem1"),
    Port("c", "float32", (16,), "out", "gmem2"),
)


@pytest.mark.parametrize("depth, caught", [(2, True), (8, False)])
def test_fork_join_needs_a_deep_second_stream(depth, caught):
    """fork writes x and y in lockstep; join drains x first: y must hold all 8 elements."""
    source = JOIN.replace("DEPTH", str(depth)).replace('  hls::stream<float> t("t");\n', "")
    design = Design("u280", (Kernel("pipe", source, JOIN_PORTS, ()),), "")
    expected = [("stream-depth", line_of(source, "variable=y"))] if caught else []
    assert [(f.rule, f.line) for f in lint_design(design)] == expected


def test_independent_producers_need_no_deep_stream():
    """join reading x then y is fine when x and y come from unrelated loads (no common
    upstream process): y's producer simply waits until join gets to it."""
    source = (
        JOIN.replace("DEPTH", "2")
        .replace('  hls::stream<float> s("s");\n  hls::stream<float> t("t");\n', "")
        .replace("  load(a, s);\n  fork(s, x, y);\n", "  load(a, x);\n  load(b, y);\n")
    )
    assert "fork(" not in source.split("extern")[1]
    design = Design("u280", (Kernel("pipe", source, JOIN_PORTS, ()),), "")
    assert lint_design(design) == []


def test_ports_of_a_written_argument_on_two_banks_are_caught():
    """m_axi-shared-bank: two ports onto one written argument are one buffer object, so one
    bank; read-only ports of one argument may sit on different banks."""
    from codegen_hls.lint import lint_shared_banks

    ports = (
        Port("a", "float32", (16,), "in", "gmem0", arg=0),
        Port("a_1", "float32", (16,), "in", "gmem1", arg=0),
        Port("c", "float32", (16,), "inout", "gmem2", arg=1),
        Port("c_1", "float32", (16,), "inout", "gmem3", arg=1),
    )
    design = design_of_source(GOOD, ports)
    good = {("pipe", "a"): "HBM[0]", ("pipe", "a_1"): "HBM[1]", ("pipe", "c"): "HBM[2]", ("pipe", "c_1"): "HBM[2]"}
    assert lint_shared_banks(design, good) == []
    found = lint_shared_banks(design, {**good, ("pipe", "c_1"): "HBM[3]"})
    assert [(f.rule, f.kernel) for f in found] == [("m_axi-shared-bank", "pipe")]
    assert "'pipe.c_1' is on HBM[3] but 'pipe.c' is on HBM[2]" in found[0].message
    cfg = "[connectivity]\nsp=pipe_1.a:HBM[0]\nsp=pipe_1.a_1:HBM[1]\nsp=pipe_1.c:HBM[2]\nsp=pipe_1.c_1:HBM[5]\n"
    found = lint_shared_banks(design, good, cfg)  # the cfg text wins over the placement
    assert [(f.rule, f.kernel, f.line) for f in found] == [("m_axi-shared-bank", "connectivity.cfg", 5)]
