"""The machine's float32, int8 and bfloat16 peaks, measured: `python -m bench.peak [--threads N]`.

Peak = cores x clock x 2 FMA units x lanes x 2 flops (a fused multiply-add is two), the lanes being the
float32 lanes of the vector registers the tiled stages compile for (16 with AVX-512, 8 with AVX2). The
clock under vector load is not the one /proc/cpuinfo shows, so it is measured: each thread runs a loop of
independent FMAs on values in registers (no memory traffic), written like the tiled stages' kernel and
compiled the same way, with their settings and for their target (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES).
`make bench` runs it too, and reports each row's share of it.

The int8 peak is measured the same way, with the int8 stage's vpdpbusd (`dot_quads`: 4 multiply-adds in each int32
lane) in place of the FMA, and counted in the same unit, two operations per multiply-add: an int8 row's share is of
this one. The ratio of the two peaks is what int8 can gain at best on this CPU. Without VNNI there is no int8 peak
(the stage's plain fallback is not a peak of anything). The bfloat16 peak is the bfloat16 stage's vdpbf16ps
(`dot_pairs`: 2 multiply-adds in each float32 lane) the same way; none without AVX512_BF16. On a CPU with AMX, the
AMX stage's tdpbf16ps has a peak of its own (`tile_dot`: 16 x 16 sums of 32 products each), measured on tiles
loaded once: a row that computes on AMX is measured against that one.
"""

import argparse
import time

import numba
import numpy as np
from numba import njit, prange

from common import intrinsics as amx
from common.cli import positive_int
from common.intrinsics import (
    HAS_BF16,
    HAS_VNNI,
    LANES,
    PAIR,
    QUAD,
    VECTOR_REGISTERS,
    bf16_bits,
    dot_pairs,
    dot_quads,
    stack_floats,
    stack_ints,
    tile_vectorizer,
    wide_vectors,
)

# Three quarters of the vector registers as independent sums (24 with AVX-512, 12 with AVX2), one vector
# each: more than the 2 units x 4 cycles of FMA latency need in flight, and no spills.
CHAINS, WIDTH = VECTOR_REGISTERS * 3 // 4, LANES
SUMS = CHAINS * WIDTH
MACS_PER_DOT = LANES * QUAD  # vpdpbusd: LANES lanes of QUAD multiply-adds
MACS_PER_PAIR_DOT = LANES * PAIR  # vdpbf16ps: LANES lanes of PAIR multiply-adds
# tdpbf16ps: a sum tile of TILE_ROWS x AMX_N, each sum AMX_K products
MACS_PER_TILE_DOT = amx.TILE_ROWS * amx.AMX_N * amx.AMX_K
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


def dot_loop_of(stack, dot):
    """A loop of CHAINS independent dot products `dot` per step, on sums in a `stack` array, in each thread: the
    int8 stage's (stack_ints, dot_quads) or the bfloat16 stage's (stack_floats, dot_pairs), common/intrinsics.py's."""
    @njit(parallel=True)
    def dot_loop(operand, weight, out, steps):
        wide_vectors()
        for thread in prange(out.shape[0]):
            wide_vectors()
            sums = stack(SUMS)
            for i in range(SUMS):
                sums[i] = 0
            for _ in range(steps):
                for r in range(CHAINS):
                    dot(sums, r * WIDTH, operand, weight, 0)
            for i in range(SUMS):
                out[thread, i] = sums[i]

    return dot_loop


dot_loop, pair_loop = dot_loop_of(stack_ints, dot_quads), dot_loop_of(stack_floats, dot_pairs)


def bf16_peak_flops(threads: int) -> float | None:
    """Best bfloat16 FLOP/s (2 per multiply-add) of `threads` threads, each running its own loop of independent
    vdpbf16ps; None on a CPU without AVX512_BF16."""
    if not HAS_BF16:
        return None
    numba.set_num_threads(threads)
    pair = bf16_bits(np.zeros(PAIR)).view(np.int32)  # products of 0: the sums stay 0, never denormal
    weight = np.full(WIDTH, pair[0], np.int32)
    out = np.empty((threads, SUMS), np.float32)
    pair_loop(pair[0], weight, out, 1)
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        pair_loop(pair[0], weight, out, STEPS)
        best = min(best, time.perf_counter() - start)
    return threads * STEPS * CHAINS * MACS_PER_PAIR_DOT * FLOPS_PER_FMA / best


@njit(parallel=True)
def tile_loop(config, data, out, steps):
    for thread in prange(out.shape[0]):
        amx.load_tile_config(config)
        amx.zero_tile(0)
        amx.zero_tile(1)
        amx.zero_tile(2)
        amx.zero_tile(3)
        amx.load_tile(4, data, 0, amx.TILE_ROW_BYTES)
        amx.load_tile(5, data, 0, amx.TILE_ROW_BYTES)
        amx.load_tile(6, data, 0, amx.TILE_ROW_BYTES)
        amx.load_tile(7, data, 0, amx.TILE_ROW_BYTES)
        for _ in range(steps):  # 4 independent sums, as the AMX conv kernel keeps
            amx.tile_dot(0, 4, 5)
            amx.tile_dot(1, 4, 6)
            amx.tile_dot(2, 4, 7)
            amx.tile_dot(3, 4, 5)
        amx.release_tiles()
        out[thread] = steps


def amx_peak_flops(threads: int) -> float | None:
    """Best AMX bfloat16 FLOP/s (2 per multiply-add) of `threads` threads, each running its own loop of tdpbf16ps on
    tiles of zeros; None where this process may not use AMX."""
    if not amx.HAS_AMX:
        return None
    numba.set_num_threads(threads)
    config = amx.tile_config(amx.TILE_ROWS)
    data = amx.cache_aligned(np.zeros(amx.TILE_ROWS * amx.TILE_ROW_BYTES, np.uint8))
    out = np.empty(threads, np.int64)
    tile_loop(config, data, out, 1)
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        tile_loop(config, data, out, STEPS // amx.SUM_TILES)
        best = min(best, time.perf_counter() - start)
    return threads * (STEPS // amx.SUM_TILES) * amx.SUM_TILES * MACS_PER_TILE_DOT * FLOPS_PER_FMA / best


def int8_peak_ops(threads: int) -> float | None:
    """Best int8 operations (2 per multiply-add) per second of `threads` threads, each running its own loop of
    independent vpdpbusd; None on a CPU without VNNI."""
    if not HAS_VNNI:
        return None
    numba.set_num_threads(threads)
    weight = np.full(WIDTH, 0x01010101, np.int32)  # codes 1: the sums grow by 4 a step, far from overflowing
    out = np.empty((threads, SUMS), np.int32)
    dot_loop(np.int32(0x01010101), weight, out, 1)
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        dot_loop(np.int32(0x01010101), weight, out, STEPS)
        best = min(best, time.perf_counter() - start)
    return threads * STEPS * CHAINS * MACS_PER_DOT * FLOPS_PER_FMA / best


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
        ops = int8_peak_ops(count)
        print(f"    int8 (vpdpbusd): {ops / 1e9:.1f} GOP/s, {ops / flops:.2f}x the float32 peak" if ops else
              "    int8: no VNNI on this CPU, no int8 peak")
        bf16_flops = bf16_peak_flops(count)
        print(f"    bfloat16 (vdpbf16ps): {bf16_flops / 1e9:.1f} GFLOP/s, {bf16_flops / flops:.2f}x the float32 peak"
              if bf16_flops else "    bfloat16: no AVX512_BF16 on this CPU, no bfloat16 peak")
        amx_flops = amx_peak_flops(count)
        print(f"    AMX bfloat16 (tdpbf16ps): {amx_flops / 1e9:.1f} GFLOP/s, {amx_flops / flops:.2f}x the float32 peak"
              if amx_flops else "    AMX: not on this CPU (or not allowed), no AMX peak")


if __name__ == "__main__":
    main()
