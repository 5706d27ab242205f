"""Stage 6, threads: convolutions run in parallel over output channels (numba prange)."""

from stages import Stage

STAGE = Stage(__name__, threads=True, generates=True)
