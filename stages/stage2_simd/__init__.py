"""Stage 2, simd: loops the compiler vectorizes (fastmath, contiguous innermost loops)."""

from stages import Stage

STAGE = Stage(__name__)
