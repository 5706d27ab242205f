"""Stage 6, threads: convolutions run in parallel over output channels (numba prange)."""
