"""The model against published U280 figures (docs/model_validation.md has the table).

Every row states its error; rows within the +-15 % target must stay there, and the rows
documented as misses must still miss by what the document says (so the document stays true).
"""

from __future__ import annotations

import pytest

from tvm_spatial.estimate.published import allo_gpt2_estimate, validation_rows

TARGET = 0.15
# documented errors (docs/model_validation.md), to 2 percentage points
DOCUMENTED = {
    ("PolyBench gemm", "latency_ms"): 0.009,
    ("PolyBench mvt", "latency_ms"): -0.374,
    ("PolyBench bicg", "latency_ms"): -0.002,
    ("PolyBench gesummv", "latency_ms"): 0.000,
    ("PolyBench atax", "latency_ms"): 0.120,
    ("PolyBench syrk", "latency_ms"): -0.336,
    ("PolyBench syr2k", "latency_ms"): -0.342,
    ("PolyBench trmm", "latency_ms"): 0.075,
    ("PolyBench symm", "latency_ms"): -0.093,
    ("PolyBench jacobi-2d", "latency_ms"): -0.111,
    ("PolyBench correlation", "latency_ms"): -0.375,
    ("Allo GPT2 U280", "dsp"): 0.079,
    ("Allo GPT2 U280", "bram18k"): 0.135,
}


@pytest.fixture(scope="module")
def rows():
    return validation_rows()


def test_every_row_is_documented(rows):
    assert {(r.name, r.quantity) for r in rows} == set(DOCUMENTED)


@pytest.mark.parametrize("key", sorted(DOCUMENTED))
def test_row_error(rows, key):
    row = next(r for r in rows if (r.name, r.quantity) == key)
    print(f"{row.name} {row.quantity}: published {row.published:g}, estimated {row.estimated:.4g}, "
          f"error {row.error:+.1%}")
    assert row.error == pytest.approx(DOCUMENTED[key], abs=0.02)
    if row.expected_miss:
        assert abs(row.error) > TARGET
    else:
        assert abs(row.error) <= TARGET


def test_allo_gpt2_at_the_artifacts_seq_512():
    """The artifact's kernel.h is built for seq 512: BRAM (+URAM for the KV buffers) then
    matches its post-route report (768 BRAM18K, 47 URAM) more closely."""
    est = allo_gpt2_estimate(seq=512)
    assert est.total.bram18k / 768 - 1 == pytest.approx(-0.021, abs=0.02)
    assert est.total.uram == pytest.approx(47, rel=0.2)
