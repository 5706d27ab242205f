"""Stage 10, Winograd: stage 9 plus Winograd F(2x2, 3x3) for the 3x3 convolutions of layers 1-3."""

from stages import Stage

STAGE = Stage(__name__, threads=True, generates=True, tiles=True)
