"""Stage 17, bfloat16 strides moved: stage 16's rewrite in stage 14's bfloat16, where it pays as much."""

from stages import Stage

STAGE = Stage(__name__, precision="bf16", threads=True, generates=True, tiles=True, tunes=True, predecessor=14,
              rewrites=True)
