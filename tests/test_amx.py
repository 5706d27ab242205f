"""Stage 15's AMX pieces, each against plain numpy: the tile configuration's bytes, the cache-line copies, the stem's
row taps (its packed weights, read the way the AMX kernel reads them, give the stem's direct conv), one tdpbf16ps
through the intrinsics (on a CPU that lets this process use AMX), and the whole stage without AMX (numba compiling
for this CPU minus its AMX features), which must say so and still give the reference's answers. The whole network
on AMX against the reference is in tests/test_network.py; the generated kernels' statements, on any CPU, in
tests/test_amx_emulator.py.
"""

import json

import llvmlite.binding as llvm
import numba
import numpy as np
import pytest

from common import intrinsics
from common.architecture import resnet50
from common.labels import softmax
from common.paths import PICS_DIR, WEIGHTS_DIR
from common.stages import STAGES, record, stage_module
from common.weights import load_tensor
from tests.conftest import PICS
from tests.test_network import check_answer
from tests.test_portable_tiles import run_python

STAGE = next(stage for stage in STAGES if record(stage).peak == "tdpbf16ps")  # the stage on AMX tiles
model = stage_module(STAGE)
SEED = 15
ROWS = 14  # sum and input tile rows in the toy tile product
TILE_SUMS = model.TILE_ROWS * model.AMX_N  # a whole sum tile's, for the stack array it is stored to
AMX_ONLY = pytest.mark.skipif(not model.HAS_AMX, reason="this process may not use AMX here (the fallback is tested)")


def test_tile_config_names_every_tiles_shape():
    config = model.tile_config(ROWS)
    assert config.size == model.TILE_CONFIG_BYTES and config[0] == model.PALETTE
    row_bytes = config[model.COLUMN_BYTES_AT: model.ROWS_AT].view(np.uint16)
    rows = config[model.ROWS_AT:]
    tiles = model.TILES_IN_USE
    assert list(row_bytes[:tiles]) == [model.TILE_ROW_BYTES] * tiles and not row_bytes[tiles:].any()
    assert list(rows[: model.SUM_TILES + 1]) == [ROWS] * (model.SUM_TILES + 1)  # the sums and the input: pixels
    assert list(rows[model.SUM_TILES + 1: tiles]) == [model.TILE_ROWS] * len(model.WEIGHT_TILES)  # weights: pairs


def test_cache_aligned_copies_only_what_is_not_on_a_cache_line():
    room = np.arange(1000, dtype=np.uint16)
    for start in range(0, 64, 2):  # every 2-byte offset from a line
        array = room[start // 2: start // 2 + 100]
        aligned = model.cache_aligned(array)
        assert aligned.ctypes.data % model.TILE_ROW_BYTES == 0 and np.array_equal(aligned, array)
        assert (aligned is array) == (array.ctypes.data % model.TILE_ROW_BYTES == 0)


def stem_weights(manifest):
    conv = resnet50(manifest["variant"]).stem

    def tensors(name):
        return load_tensor(name, manifest, WEIGHTS_DIR)

    return conv, tensors


def widen(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << intrinsics.BF16_SHIFT).view(np.float32).astype(np.float64)


@pytest.mark.skipif(not model.row_taps(resnet50("v1").stem), reason="the stem does not take row taps")
def test_row_taps_read_as_the_kernel_reads_them_give_the_stems_conv(manifest):
    """fold's row-tap weights, and input tile rows read from the photo's HWC buffer at the AMX kernel's addresses
    (pixel wo x stride on, AMX_K values), give the direct 7x7 conv of the same bfloat16 weights."""
    conv, tensors = stem_weights(manifest)
    choice = model.Choice(ROWS, model.AMX_BLOCK)  # an AMX tile: fold packs for it whether or not this CPU has AMX
    packed, _ = model.fold(conv, tensors, manifest["bn_eps"], choice)
    channels = model.pairs(conv.in_channels) * model.PAIR
    rows = packed.view(np.uint16).reshape(conv.out_channels // choice.block, conv.kernel, 1, model.AMX_K // model.PAIR,
                                          choice.block, model.PAIR)
    taps = widen(rows).transpose(0, 4, 1, 2, 3, 5).reshape(conv.out_channels, conv.kernel, model.AMX_K)  # [o][kh][k]
    rng = np.random.default_rng(SEED)
    side = conv.in_size + 2 * conv.padding
    x = np.zeros((side, side, channels), np.float32)  # the photo's buffer: HWC, a border, a 4th channel of zeros
    x[:, :, : conv.in_channels] = rng.standard_normal((side, side, conv.in_channels))
    x = widen(model.bf16_bits(x))
    flat = x.reshape(-1)
    ho = 5  # one output row, every pixel of it
    starts = ((ho * conv.stride + np.arange(conv.kernel))[:, None] * side
              + np.arange(conv.out_size)[None, :] * conv.stride) * channels  # [kh][wo]
    inputs = flat[starts[..., None] + np.arange(model.AMX_K)]  # [kh][wo][k]: the input tiles' rows
    got = np.einsum("hwk,ohk->wo", inputs, taps)
    weight = widen(model.bf16_bits(tensors(f"{conv.name}.weight") * bn_scale(conv, tensors, manifest)))
    window = np.lib.stride_tricks.sliding_window_view(x[:, :, : conv.in_channels], (conv.kernel, conv.kernel),
                                                      axis=(0, 1))[:: conv.stride, :: conv.stride]  # [h][w][c][kh][kw]
    expected = np.einsum("wchk,ochk->wo", window[ho, : conv.out_size], weight)
    assert np.allclose(got, expected, rtol=1e-9, atol=1e-9)


def bn_scale(conv, tensors, manifest) -> np.ndarray:
    gamma, var = (tensors(f"{conv.bn}.{part}").astype(np.float64) for part in ("weight", "running_var"))
    return (gamma / np.sqrt(var + manifest["bn_eps"]))[:, None, None, None]


@numba.njit
def one_tile_dot(config, inputs, weights, out):
    sums = intrinsics.stack_lines(TILE_SUMS)  # on a cache line, as the AMX kernel's
    model.load_tile_config(config)
    model.zero_tile(0)
    model.load_tile(4, inputs, 0, model.TILE_ROW_BYTES)
    model.load_tile(5, weights, 0, model.TILE_ROW_BYTES)
    model.tile_dot(0, 4, 5)
    model.store_tile(0, sums, 0, model.TILE_ROW_BYTES)
    model.release_tiles()
    for i in range(out.size):
        out[i] = sums[i]


@AMX_ONLY
def test_one_tdpbf16ps_sums_the_pairs_products():
    """An input tile of ROWS x 32 bfloat16s times a weight tile of 16 pairs x 16 columns of pairs: each sum is its
    row's 32 values times its column's 32 weights, the pairs in the [k / 2][column][2] packing."""
    rng = np.random.default_rng(SEED)
    inputs = model.bf16_bits(rng.standard_normal((ROWS, model.AMX_K)))
    weights = model.bf16_bits(rng.standard_normal((model.AMX_K // model.PAIR, model.AMX_N, model.PAIR)))
    expected = np.einsum("rpj,pcj->rc", widen(inputs).reshape(ROWS, -1, model.PAIR), widen(weights))
    out = np.empty((ROWS, model.AMX_N), np.float32)
    one_tile_dot(model.tile_config(ROWS), model.cache_aligned(inputs), model.cache_aligned(weights), out.reshape(-1))
    assert np.allclose(out, expected, rtol=0, atol=1e-4)
    assert "tdpbf16ps" in one_tile_dot.inspect_asm(one_tile_dot.signatures[0])


def features_without_amx() -> str:
    """This CPU's features as LLVM names them, every AMX one turned off."""
    llvm.initialize_native_target()
    return ",".join(f"-{name}" if name.startswith("amx") else f"{'+' if on else '-'}{name}"
                    for name, on in llvm.get_host_cpu_features().items())


@pytest.mark.slow
def test_without_amx_the_stage_says_so_and_gives_the_reference_answers(reference_logits):
    env = {"NUMBA_CPU_NAME": llvm.get_host_cpu_name(), "NUMBA_CPU_FEATURES": features_without_amx()}
    result = run_python(["-m", f"stages.{STAGE}", str(PICS_DIR), "--json", "--warmup", "0"], env)
    assert result.returncode == 0, result.stderr
    assert "no AMX here" in result.stderr, result.stderr
    answers = {line["image"]: line["top5"] for line in map(json.loads, result.stdout.splitlines())}
    for path in PICS:
        top5 = answers[str(path)]
        check_answer(STAGE, [t["class_id"] for t in top5], [t["prob"] for t in top5],
                     softmax(reference_logits[path]), f"{path.name}, without AMX")
