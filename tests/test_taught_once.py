"""A mechanism is written out in the stage that introduces it, where the learner meets it, and the stages after it
import it from common/. The two must be one: each definition a stage teaches here is, to the character, the one
common/ gives the stages after it (and bench.peak), so that what a learner reads is what runs later."""

import importlib
import inspect

import pytest

# stage -> (common module, the definitions it teaches that the module holds for the later stages)
TAUGHT = [
    ("stage3_preload", "common.weights", ["load_tensors"]),
    ("stage5_codegen", "common.kernels", ["BATCH_NORM", "RELU", "ADD", "MAX_POOL", "GLOBAL_AVG_POOL",
                                          "FULLY_CONNECTED"]),
    ("stage8_tiled", "common.intrinsics", ["wide_vectors", "tile_vectorizer"]),
    ("stage8_tiled", "common.tiles", ["ROWS", "channel_vectors", "BLOCK", "TILE_CHOICE", "fold"]),
    ("stage11_winograd4", "common.winograd", ["WINOGRAD_TILES", "WINOGRAD_B_T", "WINOGRAD_A_T", "TRANSFORM_DEPTH",
                                              "WINOGRAD_INPUT", "WINOGRAD_PRODUCTS", "WINOGRAD_OUTPUT", "winograd_tile",
                                              "combination", "transform_source"]),
    ("stage12_tuned", "common.tiles", ["ROW_CHOICES", "register_tiles", "TILES", "Choice", "shape_name", "label"]),
    ("stage12_tuned", "common.tuned", ["PRELUDE", "candidates", "fold", "stand_in", "stand_in_fc"]),
    ("stage13_int8", "common.intrinsics", ["QUAD", "INT8_MAX", "VNNI", "VNNI_FEATURE", "VNNI_INTRINSIC", "HAS_VNNI",
                                           "vnni_quads", "plain_quads"]),
    ("stage14_bf16", "common.intrinsics", ["PAIR", "BF16_SHIFT", "HALF_ULP", "BF16_FEATURE", "BF16_INTRINSIC",
                                           "HAS_BF16", "BFloat16", "to_bf16", "from_bf16", "bf16_bits", "bf16_pairs",
                                           "plain_pairs"]),
    ("stage14_bf16", "common.bf16", ["INT16_MIN", "NON_NEGATIVE", "CONV", "MAX_POOL", "GLOBAL_AVG_POOL", "INPUT_BF16",
                                     "FULLY_CONNECTED", "candidates", "pairs", "fold_fc", "stand_in", "stand_in_fc"]),
    ("stage16_strides", "common.rewrites", ["strides_moved"]),
    ("stage15_amx_bf16", "common.intrinsics", ["AMX_FEATURES", "TILE_ROW_BYTES", "TILE_ROWS", "AMX_K", "AMX_N",
                                               "SUM_TILES", "AMX_BLOCK", "TILES_IN_USE", "HAS_AMX", "amx_permitted",
                                               "tile_call", "load_tile", "store_tile", "zero_tile", "tile_dot",
                                               "release_tiles", "load_tile_config", "tile_config", "cache_aligned"]),
]
CASES = [(stage, module, name) for stage, module, names in TAUGHT for name in names]


def definition(value):
    """What a name stands for, to compare: a function's or class's source (an intrinsic's or a compiled function's:
    its Python definition's), or the value itself."""
    for attribute in ("_defn", "py_func", "__wrapped__"):  # numba's @intrinsic, @njit; @contextmanager
        value = getattr(value, attribute, value)
    return inspect.getsource(value) if inspect.isfunction(value) or inspect.isclass(value) else value


@pytest.mark.parametrize(("stage", "module", "name"), CASES, ids=[f"{s}.{n}" for s, _, n in CASES])
def test_the_stage_teaches_what_common_gives_the_stages_after_it(stage, module, name):
    taught = importlib.import_module(f"stages.{stage}.model")
    assert definition(getattr(taught, name)) == definition(getattr(importlib.import_module(module), name)), (
        f"stages/{stage}/model.py's {name} is not {module}'s: change both, or the stages after {stage} run something "
        f"else than it teaches")
