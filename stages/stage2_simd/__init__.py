"""Stage 2, simd: loops the compiler vectorizes (fastmath, contiguous innermost loops)."""
