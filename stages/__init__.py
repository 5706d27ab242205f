"""The stages: stage1_origin, stage2_simd, ... each the previous one plus one idea."""
