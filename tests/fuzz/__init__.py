"""Differential fuzzing of the ``vitis_spatial`` target against TVM's ``llvm`` build.

Where things live:

``generator.py``
    Random graphs as plain data (a *spec*: inputs, nodes, outputs; JSON-able so a failure
    can be pasted into a regression test), drawn from the supported operator table, and
    their materialization as a Relax module or as an ONNX model (imported with
    ``tvm.relax.frontend.onnx.from_onnx``).
``differential.py``
    Build a spec for both targets, run both, compare (NaN equals NaN, tolerance relative to
    the output's magnitude), classify the outcome; shrink a failing spec and write it to
    ``tests/regressions/`` as a pytest file.
``test_fuzz.py``
    The fixed-seed set that CI runs. ``benchmarks/fuzz.py`` runs more seeds.
"""
