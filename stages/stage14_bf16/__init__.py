"""Stage 14, bfloat16: weights and activations rounded to bfloat16, float32 sums by vdpbf16ps."""

from stages import Stage

STAGE = Stage(__name__, precision="bf16", threads=True, generates=True, tiles=True, tunes=True)
