"""Stage 16, strides moved: a downsampling block's stride moves up into the block before, which computes a quarter."""

from stages import Stage

STAGE = Stage(__name__, threads=True, generates=True, tiles=True, tunes=True, predecessor=12, rewrites=True)
