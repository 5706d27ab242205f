"""common/planner.py: templates render only with exactly the constants they name, and a plan's forward source calls
each step's kernel on its arrays, in order."""

import numpy as np
import pytest

from common.architecture import resnet50
from common.planner import Planner, indented, render, rotate

TEMPLATE = "def {name}(x):\n    return x * {scale} + {{literal}}\n"


def test_render_fills_every_field():
    assert render(TEMPLATE, name="f", scale=2) == "def f(x):\n    return x * 2 + {literal}\n"


@pytest.mark.parametrize("keys", [{"name": "f"}, {"name": "f", "scale": 2, "stale": 3}])
def test_render_fails_on_a_missing_or_an_unused_key(keys):
    with pytest.raises(KeyError, match="the template of f"):
        render(TEMPLATE, **keys)


def test_indented_indents_lines_with_text():
    assert indented("a\n\n  b\n", 2) == "        a\n\n          b\n"


def test_plan_lines_call_each_kernel_on_its_arrays_in_order():
    p = Planner()
    a, b, c = (np.zeros(1, np.float32) for _ in range(3))
    p.emit(TEMPLATE, "f", (a, b), scale=1)
    p.comment("block")
    p.emit(TEMPLATE, "f", (c,), scale=1)
    plan = p.plan(a, c)
    assert plan.lines() == ["    f(a[0], a[1])", "    # block", "    f(a[2])"]
    assert plan.arrays == (a, b, c) and list(plan.kernels) == ["f"]


def test_bordered_buffers_are_one_per_shape_and_of_the_planners_type():
    p = Planner(zeros=lambda shape: np.zeros(shape, np.uint16))
    first = p.bordered(4, 3, 1)
    assert first is p.bordered(4, 3, 1) and first.shape == (6, 6, 3) and first.dtype == np.uint16


def test_rotate_gives_each_block_the_three_buffers_its_input_is_not_in():
    arch = resnet50("v1")
    buffers = [np.zeros(8, np.float32) for _ in range(4)]
    seen = []

    def bottleneck(x, block, free):
        assert not any(np.may_share_memory(x, b) for b in free) and len(free) == 3
        seen.append(block.name)
        return free[2]

    assert rotate(arch, buffers[1], buffers, bottleneck) is not None
    assert seen == [block.name for block in arch.blocks]
