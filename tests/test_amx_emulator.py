"""Stage 15's generated AMX conv kernels, checked on any CPU (no AMX needed): the statements of a kernel's work on
one tile of output run with numpy doing the tile instructions (tests/amx_emulator.py), and the tile's sums must be
the conv's computed directly (run_tile raises AssertionError where they differ).

The convs are planned and packed as stage 15 plans them for a CPU with AMX (course/pictures/stage15.py: amx_choices,
amx_weights; course/pictures/shared.py: planned), with their first candidate tile there and their last (the one stage
15's picture draws), on the course's folded weights and a seeded input; each conv's first and last tile of output,
at the input's border. And a kernel whose statements are wrong fails the check.
"""

import numpy as np
import pytest

from common.architecture import resnet50
from common.stages import STAGES, record, stage_module
from course.pictures.shared import COURSE_VARIANT, example_conv, planned
from course.pictures.stage15 import amx_choices, amx_target, amx_weights
from tests.amx_emulator import run_tile

STAGE = next(stage for stage in STAGES if record(stage).peak == "tdpbf16ps")  # the stage on AMX tiles
model = stage_module(STAGE)
SEED = 15
ARCH = resnet50(COURSE_VARIANT)
# The stem (row taps), the first 3x3 and 1x1 convs, the first 1x1 of stride 2 and the last conv (the fewest pixels
# and the most output channels, its tiles group-major)
CONVS = (ARCH.stem, example_conv(ARCH), example_conv(ARCH, 1),
         next(c for c in ARCH.convs if c.kernel == 1 and c.stride > 1), ARCH.convs[-1])
CANDIDATES = {"first candidate": 0, "last candidate": -1}  # of each conv shape's, on the AMX CPU
# Statements of the 3x3 conv's kernel made wrong: a weight tile's output channels one off, the wrong weight tile for
# a sum tile, a kernel row of taps left out
WRONG = {"weight tile one channel off": (f"load_tile(6, weight, at + {model.AMX_N},",
                                         f"load_tile(6, weight, at + {model.AMX_N + 1},"),
         "wrong weight tile": ("tile_dot(1, 4, 6)", "tile_dot(1, 4, 5)"),
         "a row of taps left out": ("for kh in range(3):", "for kh in range(2):")}


@pytest.fixture(scope="module", params=CANDIDATES.values(), ids=CANDIDATES.keys())
def plan(request):
    """(choices, the plan) of the network as stage 15 plans it for a CPU with AMX, every conv shape with its candidate
    of rank request.param there."""
    *_, tiles = amx_target(model)
    choices = amx_choices(model, tiles, request.param)
    return choices, planned(STAGE, choices)


def seeded_input(conv, arrays) -> np.ndarray:
    """The conv's input as its kernel gets it (HWC bfloat16 bits on a cache line, its border and any channel past
    the conv's 0), seeded normal values inside."""
    rng = np.random.default_rng(SEED)
    x = model.cache_aligned(np.zeros_like(arrays[0]))
    p = conv.padding
    x[p: p + conv.in_size, p: p + conv.in_size, : conv.in_channels] = model.bf16_bits(
        rng.standard_normal((conv.in_size, conv.in_size, conv.in_channels)))
    return x


def run_corner_tiles(plan, conv, source=None):
    """The conv's first and last tile of output through its kernel's statements (or `source`'s), checked by
    run_tile; returns the constants the kernel was generated with."""
    choices, network = plan
    (step,) = network.of(conv.name)
    c = step.constants
    x = seeded_input(conv, step.arrays)
    weights = amx_weights(model, conv, choices[model.shape_name(conv)])
    for ho, wo0 in ((0, 0), (conv.out_size - 1, (c["column_tiles"] - 1) * c["rows"])):
        run_tile(model, step, source or network.kernels[step.kernel], x, *weights, ho, wo0)
    return c


@pytest.mark.parametrize("conv", CONVS, ids=lambda conv: conv.name)
def test_the_kernels_tiles_give_the_conv(plan, conv):
    c = run_corner_tiles(plan, conv)
    if conv is ARCH.stem:  # the stem's tile rows are row taps: a 7 x 1 conv of 32-value rows
        assert model.row_taps(conv) and (c["kernel_w"], c["chunks"]) == (1, 1)


@pytest.mark.parametrize("right, wrong", WRONG.values(), ids=WRONG.keys())
def test_a_wrong_kernel_fails(plan, right, wrong):
    conv = example_conv(ARCH)
    _, network = plan
    (step,) = network.of(conv.name)
    source = network.kernels[step.kernel]
    assert source.count(right) == 1, f"the generated kernel no longer has {right!r}: make it wrong another way"
    with pytest.raises(AssertionError, match="the emulated tiles' sums are not the conv's"):
        run_corner_tiles(plan, conv, source.replace(right, wrong))
