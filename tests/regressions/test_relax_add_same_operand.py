"""Regression found by the differential fuzzer (case relax:16, while relax_passes/roles.py was new).

Outcome when found: crash
ValueError: not enough values to unpack (expected 2, got 1)
  raised at relax_passes/roles.py:49 (a, b = (arg.ty for arg in value.args))
Graph: add(x1, x1) -- FuseOpsByPattern gives the composite one parameter for the repeated
operand, so its call has one argument; the residual-add role check assumed two. Fixed.
"""

from fuzz.differential import run_case

SPEC = {'frontend': 'relax',
 'seed': 16,
 'inputs': [{'name': 'x1', 'shape': [1, 1], 'dtype': 'int64', 'lo': -8, 'hi': 8, 'step': None}],
 'nodes': [{'op': 'add', 'args': ['x1', 'x1'], 'outs': ['v2'], 'attrs': {}}],
 'outputs': ['v2'],
 'groups': {'v2': 0}}


def test_relax_add_same_operand():
    outcome = run_case(SPEC)
    assert outcome.kind == "pass", outcome.detail


def test_float_add_same_operand_in_a_chain():
    spec = {**SPEC,
            'inputs': [{'name': 'x1', 'shape': [2, 3], 'dtype': 'float32', 'lo': -2.0, 'hi': 2.0, 'step': None}],
            'nodes': [{'op': 'add', 'args': ['x1', 'x1'], 'outs': ['v2'], 'attrs': {}},
                      {'op': 'relu', 'args': ['v2'], 'outs': ['v3'], 'attrs': {}},
                      {'op': 'multiply', 'args': ['v3', 'v3'], 'outs': ['v4'], 'attrs': {}}],
            'outputs': ['v4']}
    outcome = run_case(spec)
    assert outcome.kind == "pass", outcome.detail
