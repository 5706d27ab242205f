"""The machine's float32 peak, measured: `python -m bench.peak [--threads N]`.

Peak = cores x clock x 2 FMA units x lanes x 2 flops (a fused multiply-add is two), the lanes being the
float32 lanes of the vector registers the tiled stages compile for (16 with AVX-512, 8 with AVX2). The
clock under vector load is not the one /proc/cpuinfo shows, so it is measured: each thread runs a loop of
independent FMAs on values in registers (no memory traffic), written like the tiled stages' kernel and
compiled the same way, with their settings and for their target (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES).
`make bench` runs it too, and reports each row's share of it.
"""

import argparse
import time

import numba
import numpy as np
from numba import njit, prange

from common.cli import positive_int
from common.stages import STAGES, stage_module

# The last stage's register tile tools; the tiled stages all have the same.
tiled = stage_module(STAGES[-1])
stack_floats, tile_vectorizer, wide_vectors = tiled.stack_floats, tiled.tile_vectorizer, tiled.wide_vectors
LANES = tiled.LANES
# Three quarters of the vector registers as independent sums (24 with AVX-512, 12 with AVX2), one vector
# each: more than the 2 units x 4 cycles of FMA latency need in flight, and no spills.
CHAINS, WIDTH = tiled.VECTOR_REGISTERS * 3 // 4, LANES
SUMS = CHAINS * WIDTH
STEPS = 2_000_000
REPEATS = 7
FLOPS_PER_FMA = 2
FMA_UNITS = 2


@njit(fastmath=True, parallel=True)
def fma_loop(scale, offset, out, steps):
    wide_vectors()
    for thread in prange(out.shape[0]):
        wide_vectors()
        acc = numba.carray(stack_floats(SUMS), (CHAINS, WIDTH))
        for r in range(CHAINS):
            for c in range(WIDTH):
                acc[r, c] = 0.0
        for _ in range(steps):
            for r in range(CHAINS):
                for c in range(WIDTH):
                    acc[r, c] = acc[r, c] * scale + offset[c]
        for r in range(CHAINS):
            for c in range(WIDTH):
                out[thread, r, c] = acc[r, c]


def measure(threads: int) -> float:
    """Best FLOP/s of `threads` threads, each running its own FMA loop."""
    numba.set_num_threads(threads)
    scale, offset = np.float32(0.5), np.full(WIDTH, 0.5, np.float32)
    out = np.empty((threads, CHAINS, WIDTH), np.float32)
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        fma_loop(scale, offset, out, STEPS)
        best = min(best, time.perf_counter() - start)
    return threads * STEPS * SUMS * FLOPS_PER_FMA / best


def peak_flops(threads: int) -> float:
    """The best FLOP/s of `threads` threads, the FMA loop compiled first with the tile kernels' settings."""
    with tile_vectorizer():
        fma_loop(np.float32(1.0), np.ones(WIDTH, np.float32), np.empty((1, CHAINS, WIDTH), np.float32), 1)
    return measure(threads)


def main():
    parser = argparse.ArgumentParser(prog="python -m bench.peak", description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=positive_int, default=numba.config.NUMBA_NUM_THREADS, metavar="N")
    args = parser.parse_args()
    threads = min(args.threads, numba.config.NUMBA_NUM_THREADS)
    for count in range(1, threads + 1):
        flops = peak_flops(count)
        clock = flops / (count * FMA_UNITS * LANES * FLOPS_PER_FMA)
        print(f"{count} thread(s): {flops / 1e9:.1f} GFLOP/s, i.e. {clock / 1e9:.2f} GHz x {FMA_UNITS} FMA units "
              f"x {LANES} lanes x {FLOPS_PER_FMA} flops per core")


if __name__ == "__main__":
    main()
