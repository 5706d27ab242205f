"""Stage 2's point is vector code: its conv kernel must contain packed FMA instructions (ymm/zmm registers);
stage 1's scalar loops, compiled without fastmath, must not."""

import pytest

from common.asm import compile_stage, packed_fma_lines, stage_functions


@pytest.mark.slow
def test_stage2_conv_uses_vector_fma():
    functions = stage_functions("stage2_simd", compile_stage("stage2_simd"))
    assert packed_fma_lines(functions["conv2d"]), "stage2_simd conv2d has no packed FMA instruction"


@pytest.mark.slow
def test_stage1_conv_is_scalar():
    functions = stage_functions("stage1_origin", compile_stage("stage1_origin"))
    assert not packed_fma_lines(functions["conv2d"])
