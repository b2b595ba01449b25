"""The C++ the common header brings to every kernel, checked against independent references:

- ``tvs_erf`` and ``tvs_tanh`` (the float erf and tanh GELU calls) against Python's
  ``math.erf``/``math.tanh`` on a dense grid of float32 inputs and the special values;
- the emulation's ``hls::stream`` (codegen_hls/include) against Xilinx's C-simulation
  stream: the same program, built with each, prints the same values and the same warnings.
"""

from __future__ import annotations

import math
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from codegen_hls import emulation
from codegen_hls.kernel import EMULATION_STREAMS_MACRO, common_header

pytestmark = pytest.mark.skipif(not any(map(shutil.which, ("g++", "c++", "clang++"))), reason="no C++ compiler")


def _build_and_run(tmp_path: Path, main: str, *flags: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    (tmp_path / "tvm_spatial_hls.h").write_text(common_header(False, True))
    (tmp_path / "main.cc").write_text('#include "tvm_spatial_hls.h"\n' + main)
    exe = tmp_path / "main"
    build = subprocess.run(
        [emulation.host_compiler(), *emulation.base_flags(), "-O2", *emulation.STRICT_FLAGS,
         *emulation.SANITIZE_FLAGS, *flags, "main.cc", "-o", str(exe)],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], input=stdin, capture_output=True, timeout=120)
    assert run.returncode == 0, run.stderr.decode()
    return run


FUNCTION_MAIN = r"""
#include <cstdio>
int main() {
  float x;
  while (std::fread(&x, sizeof x, 1, stdin) == 1) {
    const float y = tvs_FUNCTION(x);
    std::fwrite(&y, sizeof y, 1, stdout);
  }
  return 0;
}
"""
FUNCTIONS = {"erf": math.erf, "tanh": math.tanh}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_rational_function_matches_math_over_float32_inputs(tmp_path, name):
    grid = np.concatenate([
        np.linspace(-12, 12, 300_001, dtype=np.float32),
        np.geomspace(1e-38, 1, 2_000).astype(np.float32),
        -np.geomspace(1e-38, 1, 2_000).astype(np.float32),
        np.array([0.0, -0.0, 3.92, 3.9200001, 7.9, 9.01, 9.0100002, 1e30, -1e30], dtype=np.float32),
    ])
    out = _build_and_run(tmp_path, FUNCTION_MAIN.replace("FUNCTION", name), stdin=grid.tobytes()).stdout
    got = np.frombuffer(out, dtype=np.float32).astype(np.float64)
    want = np.array([FUNCTIONS[name](float(v)) for v in grid])
    assert got.shape == want.shape
    rel = np.abs(got - want) / np.maximum(np.abs(want), np.finfo(np.float32).tiny)
    assert rel.max() < 1e-6, f"worst x={grid[rel.argmax()]!r}: {got[rel.argmax()]!r} vs {want[rel.argmax()]!r}"
    assert np.all(np.signbit(got) == np.signbit(grid)), f"{name} is odd: the sign (also of zero) must follow x"
    assert np.abs(got).max() == 1.0


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_rational_function_special_values(tmp_path, name):
    special = np.array([np.nan, np.inf, -np.inf], dtype=np.float32)
    out = _build_and_run(tmp_path, FUNCTION_MAIN.replace("FUNCTION", name), stdin=special.tobytes()).stdout
    got = np.frombuffer(out, dtype=np.float32)
    assert math.isnan(got[0])
    assert struct.pack("<2f", *got[1:]) == struct.pack("<2f", 1.0, -1.0)


# Three "calls" of a producer/consumer pair over fresh streams (the later ones reuse the first's
# storage), interleaved reads and writes, the non-blocking calls, an empty read, leftovers,
# and a static stream (destroyed at exit, after the thread's own objects; ASan watches).
STREAM_MAIN = r"""
#include <cstdio>
static void call(int n, int salt) {
  hls::stream<float> a("a");
  hls::stream<int> b("b");
  for (int i = 0; i < n; ++i) {
    a.write(0.5f * i + salt);
    b << i * salt;
    if (i % 3 == 0) {
      float v = a.read();
      int w = 0;
      b >> w;
      std::printf("r %g %d\n", v, w);
    }
  }
  std::printf("size %d empty %d full %d\n", (int)a.size(), (int)a.empty(), (int)a.full());
  float v = 0;
  int reads = 0;
  while (a.read_nb(v)) {
    std::printf("nb %g\n", v);
    ++reads;
  }
  std::printf("drained %d empty %d nb-on-empty %d\n", reads, (int)a.empty(), (int)a.read_nb(v));
  std::printf("empty read %g\n", a.read());
  std::printf("write_nb %d\n", (int)a.write_nb(7.0f));
  std::printf("left %d\n", (int)b.size());  // b keeps data: both streams warn at destruction
  static hls::stream<int> kept("kept");  // as a scheduled function declares one: destroyed at exit
  kept.write(salt);
  std::printf("kept %d\n", kept.read());
}
int main() {
  call(1000, 1);
  call(37, 2);
  call(5000, 3);
  std::fflush(stdout);
  return 0;
}
"""


def _lines(run: subprocess.CompletedProcess) -> tuple[list[str], list[str]]:
    """(the program's own lines, the streams' warnings) of stdout and stderr together:
    Xilinx's model warns on stdout, ours on stderr."""
    text = (run.stdout + run.stderr).decode().splitlines()
    return [t for t in text if not t.startswith("WARNING")], [t for t in text if t.startswith("WARNING")]


def test_emulation_stream_behaves_like_xilinx_stream(tmp_path):
    ours_dir, xilinx_dir = tmp_path / "ours", tmp_path / "xilinx"
    ours_dir.mkdir()
    xilinx_dir.mkdir()
    ours = _build_and_run(ours_dir, STREAM_MAIN, f"-D{EMULATION_STREAMS_MACRO}")
    xilinx = _build_and_run(xilinx_dir, STREAM_MAIN)
    ours_lines, ours_warnings = _lines(ours)
    xilinx_lines, xilinx_warnings = _lines(xilinx)
    assert ours_lines == xilinx_lines
    assert len(ours_lines) > 3000
    # the same events warn: 3 empty reads, 3 x 2 streams with leftover data
    for warnings in (ours_warnings, xilinx_warnings):
        assert sum("read while empty" in w for w in warnings) == 3
        assert sum("leftover data" in w for w in warnings) == 6
    assert b"read while empty" in ours.stderr and b"read while empty" not in ours.stdout


def test_common_header_picks_the_emulation_stream_only_outside_synthesis():
    header = common_header(False, True)
    guard = f"#if defined({EMULATION_STREAMS_MACRO}) && !defined(__SYNTHESIS__)"
    assert guard in header
    assert header.index(guard) < header.index("#include <hls_stream.h>")
    assert (emulation.EMULATION_INCLUDE_DIR / "tvm_spatial_emulation_stream.h").is_file()
    assert f"-D{EMULATION_STREAMS_MACRO}" in emulation.EMULATION_DEFINES
