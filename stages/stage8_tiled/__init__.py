"""Stage 8, tiled: a register-tiled conv kernel that keeps a tile of sums in vector registers."""

from stages import Stage

STAGE = Stage(__name__, threads=True, generates=True, tiles=True)
