"""Stage 11, Winograd 4x4: F(4x4, 3x3) where its 4x4 output tiles fit (layers 1-2), F(2x2, 3x3) elsewhere."""

from stages import Stage

STAGE = Stage(__name__, threads=True, generates=True, tiles=True)
