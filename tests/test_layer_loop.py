"""codegen_hls.layer_loop.find_loop on hand-built step lists: which repeats it loops,
what it stacks, carries and shares, and the dataflow it refuses (the engine then stays
unrolled). The end-to-end check -- a looped engine's logits against onnxruntime's -- is in
test_token_parallel_build.py."""

from __future__ import annotations

from codegen_hls.layer_loop import find_loop


class V:
    """A value: a region argument when its name starts with ``w``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def _is_argument(v: V) -> bool:
    return v.name.startswith("w")


def _layers(count: int, mask: V | None = None, weights=None):
    """Steps of a prologue (x0 = embed), ``count`` layers of three steps -- h = f(x, w),
    m = h + x, y = g(m, h) -- and an epilogue reading the last y. Each step: (signature,
    values used, ids of those it defines)."""
    x = V("x0")
    steps = [("embed", [x], {id(x)})]
    values = []
    weights = weights or [V(f"w{r}") for r in range(count)]
    for r in range(count):
        h, m, y = V(f"h{r}"), V(f"m{r}"), V(f"y{r}")
        steps.append(("f", [x, weights[r], *([mask] if mask else []), h], {id(h)}))
        steps.append(("add", [h, x, m], {id(m)}))
        steps.append(("g", [m, h, y], {id(y)}))
        values.append((h, m, y))
        x = y
    out = V("out")
    steps.append(("head", [x, out], {id(out)}))
    return steps, values, weights


def _find(steps):
    return find_loop([s for s, _, _ in steps], [u for _, u, _ in steps], [d for _, _, d in steps], _is_argument)


def test_a_layers_steps_loop_with_the_weights_stacked_and_the_residual_carried():
    steps, values, weights = _layers(4)
    loop = _find(steps)
    assert (loop.start, loop.period, loop.count) == (1, 3, 4)
    assert loop.stacked == [tuple(weights)]
    (init, body), = loop.carried
    assert init.name == "x0" and body is values[0][2]  # the first layer's y replaces x0 each layer
    # a later layer's value is the first layer's at its place (its array, as printed)
    assert all(loop.first_of(v) is first for layer in values for v, first in zip(layer, values[0]))
    assert [s for s, _, _ in loop.folded(steps)] == ["embed", "f", "add", "g", "head"]


def test_a_value_from_before_the_loop_read_by_every_layer_is_shared():
    mask = V("mask")
    steps, _, _ = _layers(3, mask=mask)
    steps.insert(0, ("make_mask", [mask], {id(mask)}))
    loop = _find(steps)
    assert loop.count == 3 and loop.shared == [mask]


def test_an_argument_every_layer_reads_is_shared_and_one_some_layers_read_stops_the_loop():
    """A weight tied across every layer is read as it is; one two of three layers read is no
    stacked port's ``[layer]`` (each layer's argument once), so no loop."""
    tied = V("w_tied")
    loop = _find(_layers(2, weights=[tied, tied])[0])
    assert loop.count == 2 and loop.stacked == [] and loop.shared == [tied]
    assert _find(_layers(3, weights=[tied, tied, V("w2")])[0]) is None


def test_no_loop_when_an_earlier_layers_value_is_read_after_the_loop():
    steps, values, _ = _layers(2)
    steps.append(("peek", [values[0][0]], set()))  # the first layer's h, after the last layer
    assert _find(steps) is None


def test_no_loop_when_the_residual_is_read_where_the_next_is_written():
    """y = x + h in one step: the carried value's array would be written by the step that
    reads it (a stage never writes an array it reads), so no loop."""
    x = V("x0")
    steps = [("embed", [x], {id(x)})]
    for r in range(3):
        h, y = V(f"h{r}"), V(f"y{r}")
        steps += [("f", [x, V(f"w{r}"), h], {id(h)}), ("add", [h, x, y], {id(y)})]
        x = y
    assert _find(steps) is None


def test_one_layer_is_no_loop():
    steps, _, _ = _layers(1)
    assert _find(steps) is None
