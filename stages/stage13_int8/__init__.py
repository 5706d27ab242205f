"""Stage 13, int8: weights in 8-bit integers, activations in 8-bit codes, sums in 32-bit integers by VNNI."""

from stages import Stage

STAGE = Stage(__name__, precision="int8", threads=True, generates=True, tiles=True, tunes=True)
