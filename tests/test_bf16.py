"""Stage 14's bfloat16 pieces, each against an independent reference: the rounding against torch's bfloat16, the
widening back, vdpbf16ps through the intrinsic and the plain fallback against float64 sums, the weights' packing, and
the max pool's order of bfloat16 bits. The whole network against the reference is in tests/test_network.py (top-1
identical, 4 of the top 5), its AVX2 build, which runs the fallback, in tests/test_portable_tiles.py.
"""

import numba
import numpy as np
import pytest
import torch

from common import intrinsics, tiles
from common.architecture import resnet50
from common.paths import WEIGHTS_DIR
from common.stages import STAGES, precision, stage_module
from common.weights import load_tensor

STAGE = next(stage for stage in STAGES if precision(stage) == "bf16")
model = stage_module(STAGE)
SEED = 14
CHANNEL_PAIRS = 40  # input channels / 2 in the toy dot products
BF16_EPSILON = 2.0**-7  # the distance from 1 to the next bfloat16: 7 stored mantissa bits
# Bit patterns where rounding decides: exactly halfway between two bfloat16s (ties go to the even one, 0x3F80 and
# 0x3F82), just above halfway, a carry into the exponent, negative values, and the largest and smallest normals.
EDGES = np.array([0x3F808000, 0x3F818000, 0x3F808001, 0x3F7FFFFF, 0xBF808000, 0xBF818001, 0x7F7F0000,
                  0x00800000, 0x00000000, 0x80000000], np.uint32)


@numba.njit
def rounded_by_numba(values, out):
    for i in range(values.size):
        out[i] = model.to_bf16(values[i])


@numba.njit
def widened_by_numba(bits, out):
    for i in range(bits.size):
        out[i] = model.from_bf16(bits[i])


def test_rounding_is_torchs_round_to_nearest_even():
    rng = np.random.default_rng(SEED)
    values = np.concatenate([rng.standard_normal(100_000, np.float32) * 10.0 ** rng.integers(-30, 30, 100_000),
                             EDGES.view(np.float32)]).astype(np.float32)
    expected = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    out = np.empty(values.size, np.uint16)
    rounded_by_numba(values, out)
    assert np.array_equal(out, expected)
    assert np.array_equal(model.bf16_bits(values), expected)  # numpy's twin, which fold uses
    assert out[-len(EDGES):][:2].tolist() == [0x3F80, 0x3F82]  # the ties, to the even neighbour


def test_widening_is_exact_and_rounding_is_within_half_a_step():
    rng = np.random.default_rng(SEED)
    values = rng.standard_normal(10_000).astype(np.float32)
    bits = model.bf16_bits(values)
    widened = np.empty(values.size, np.float32)
    widened_by_numba(bits, widened)
    assert np.array_equal(widened, (bits.astype(np.uint32) << model.BF16_SHIFT).view(np.float32))
    assert np.all(np.abs(widened - values) <= np.abs(values) * BF16_EPSILON / 2)
    again = np.empty(values.size, np.uint16)
    rounded_by_numba(widened, again)
    assert np.array_equal(again, bits)  # a bfloat16 rounds to itself


def toy_sums(dot):
    """A tile's worth of dot_pairs calls, as the conv kernel makes them: one pixel's pairs against 2 x LANES
    channels."""
    block = 2 * model.LANES

    @numba.njit
    def run(pairs, weight, out):
        sums = intrinsics.stack_floats(32)
        for i in range(32):
            sums[i] = 0.0
        for p in range(pairs.size):
            for v in range(0, block, model.LANES):
                dot(sums, v, pairs[p], weight, p * block + v)
        for i in range(block):
            out[i] = sums[i]

    return run, block


BF16_ONLY = pytest.mark.skipif(not model.HAS_BF16, reason="this CPU has no AVX512_BF16 (the plain fallback is tested)")


@pytest.mark.parametrize("dot", [model.plain_pairs, pytest.param(model.bf16_pairs, marks=BF16_ONLY)],
                         ids=["plain", "vdpbf16ps"])
def test_dot_pairs_sum_the_products_in_float32(dot):
    run, block = toy_sums(dot)
    rng = np.random.default_rng(SEED)
    x = model.bf16_bits(rng.standard_normal((CHANNEL_PAIRS, model.PAIR)))  # 2 channels of one pixel a pair
    w = model.bf16_bits(rng.standard_normal((CHANNEL_PAIRS, block, model.PAIR)))
    widen = lambda bits: (bits.astype(np.uint32) << model.BF16_SHIFT).view(np.float32).astype(np.float64)  # noqa: E731
    expected = np.einsum("pj,poj->o", widen(x), widen(w))
    out = np.empty(block, np.float32)
    run(x.view(np.int32).reshape(-1), w.view(np.int32).reshape(-1), out)
    # float32 sums of 80 products of values near 1: a few float32 roundings each, far below a bfloat16 step.
    assert np.allclose(out, expected, rtol=0, atol=1e-4)
    if dot is model.bf16_pairs:  # the instruction itself, not something LLVM made of it
        assert "vdpbf16ps" in run.inspect_asm(run.signatures[0])


def test_weights_are_packed_as_the_kernel_reads_them(manifest):
    """fold: every weight the bfloat16 nearest its folded value, and the flat int32 array, read as uint16, is
    [group][kh][kw][ci / 2][block][2] of the OIHW weights, the stem's 4th input channel zero."""
    conv = resnet50(manifest["variant"]).stem
    choice = model.Choice(tiles.ROWS, tiles.BLOCK)

    def tensors(name):
        return load_tensor(name, manifest, WEIGHTS_DIR)

    packed, bias = model.fold(conv, tensors, manifest["bn_eps"], choice)
    groups, block, k = conv.out_channels // choice.block, choice.block, conv.kernel
    pairs = model.pairs(conv.in_channels)
    bits = packed.view(np.uint16).reshape(groups, k, k, pairs, block, model.PAIR)
    oihw = bits.transpose(0, 4, 3, 5, 1, 2).reshape(conv.out_channels, pairs * model.PAIR, k, k)
    assert np.all(oihw[:, conv.in_channels:] == 0)
    gamma, beta, mean, var = (tensors(f"{conv.bn}.{p}").astype(np.float64)
                              for p in ("weight", "bias", "running_mean", "running_var"))
    scale = gamma / np.sqrt(var + manifest["bn_eps"])
    folded = tensors(f"{conv.name}.weight") * scale[:, None, None, None]
    assert np.array_equal(oihw[:, : conv.in_channels], model.bf16_bits(folded))
    assert np.allclose(bias, beta - mean * scale, atol=1e-6)


def test_max_pool_orders_bfloat16_bits_as_their_values():
    """The max pool compares bits as int16: for values that are not negative, and a ReLU's -0.0, that is the
    order of the values, and -0.0 loses to every positive value (as uint16 it would win)."""
    values = np.array([-0.0, 0.0, 1e-30, 0.5, 1.0, 3.0, 1e30], np.float32)
    as_int16 = model.bf16_bits(values).view(np.int16)
    assert np.all(np.diff(as_int16[1:]) > 0) and as_int16[0] < as_int16[2]
    assert as_int16[0] == model.INT16_MIN == np.iinfo(np.int16).min  # -0.0 is the least: the pool's start
