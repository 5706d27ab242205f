"""Stage 7, fused: batch norm folded into the conv weights; bias, residual add and ReLU in the conv's output loop."""

from stages import Stage

STAGE = Stage(__name__, threads=True, generates=True)
