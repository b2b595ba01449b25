"""Tune a GPT2 design for an Alveo card, the way TVM's tuning tutorials tune a model.

Steps: load the ONNX model into Relax; extract the spatial design's workload (one process
per operator per layer, nothing compiled); tune every matmul process's MAC array with
``tvm.s_tir.meta_schedule`` -- the runner is the analytical model, so a trial takes
milliseconds -- into a JSON database; build with ``with database: relax.build(...)``; and
(``--check``) run the tuned design in emulation against onnxruntime.

    python contrib/tune_gpt2.py                      # the GPT2 fixture, 64 trials
    python contrib/tune_gpt2.py --trials 16 --check  # small budget, then emulate
    python contrib/tune_gpt2.py --export small --trials 256 --work-dir gpt2_tuning
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from contrib._tuning_script import main  # noqa: E402

if __name__ == "__main__":
    main(__doc__.split("\n")[0], "gpt2_tiny", "gpt2")
