"""`make stageN profile`: where one stage's forward pass spends its time, layer by layer.

    python -m bench.profile STAGE [--image PATH] [--threads N] [--runs N]

Every stage runs its forward pass as Python calling numba-compiled kernels (stage 4 on from a planned list,
stage 5 on from a generated module). While profiling, every call from Python into any numba dispatcher is
timed (the dispatcher class's __call__ is wrapped; calls between compiled functions are not seen, they are
part of their caller). The calls are then given to layers in forward order, as common.architecture lists
them: a kernel whose name contains "conv" starts the next convolution layer, and two of its arrays must
be that layer's input and output (HWC, possibly inside a zero border or viewed with W and C merged); batch
norm, relu and the residual add that follow belong to the current layer; then max pool, global average
pool and fc. A kernel the profiler cannot place stops it
with an error instead of a guess. Time outside the kernels (Python, and for stages 1-2 weight loading) is
its own row. Nothing in the stage folders is changed.
"""

import argparse
import math
import os
import re
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.report import FLOPS_PER_MAC, GIGA, MS_PER_S
from bench.rows import DEFAULT_IMAGE, check_stage, rounds_for
from common.architecture import STEM_PADDING, Bottleneck, Conv, Linear, MaxPool, ResNet50, resnet50
from common.cli import positive_int
from common.errors import UserError
from common.image import load_image
from common.paths import WEIGHTS_DIR
from common.stages import stage_module
from common.timing import timed
from common.weights import load_manifest

PROFILE_SECONDS = 5.0  # profiled forward passes: as many as fit, within MIN_RUNS..MAX_RUNS
MIN_RUNS, MAX_RUNS = 1, 20
MEGA = 1e6
PERCENT = 100.0
AVGPOOL = "avgpool"
JOINS = "joins"  # batch norm, relu, residual add: part of the layer in progress
# Kernel names -> the layers they compute, matched between underscores. A fused kernel names several
# layers (average_pool_fully_connected); a conv kernel that also does batch norm is a conv. A Winograd
# conv is three kernels: the input transform starts the layer, the products and the output transform join it.
WINOGRAD_START = "winograd_input"
KERNEL_PATTERNS = (
    (r"conv|" + WINOGRAD_START, "conv"), (r"max_?pool", "maxpool"), (r"(avg|average)_?pool", AVGPOOL),
    (r"fully_connected|fc", "fc"), (r"batch_norm|bn|relu|add|winograd_products|winograd_output", JOINS),
)
# A stage may keep an activation inside a zero border (the next layer's padding), up to the widest one.
MAX_BORDER = STEM_PADDING


@dataclass
class Layer:
    name: str
    kind: str  # conv, maxpool, avgpool or fc
    block: str  # the bottleneck it belongs to ("" outside the blocks)
    in_shape: tuple[int, ...]  # HWC, or (features,)
    out_shape: tuple[int, ...]
    macs: int  # multiply-adds; 0 for the pools, which only compare and add
    shortcut: bool = False  # a block's projection shortcut: may run before, between or after the main path


def layers(arch: ResNet50) -> list[Layer]:
    """The network's layers in forward order, with their shapes and multiply-adds."""

    def conv(c: Conv, block: Bottleneck | None = None) -> Layer:
        shortcut = block is not None and c == block.downsample
        return Layer(c.name, "conv", block.name if block else "", (c.in_size, c.in_size, c.in_channels),
                     (c.out_size, c.out_size, c.out_channels), c.macs, shortcut)

    def pool(p: MaxPool) -> Layer:
        return Layer(p.name, "maxpool", "", (p.in_size, p.in_size, p.channels), (p.out_size, p.out_size, p.channels), 0)

    def fc(f: Linear) -> Layer:
        return Layer(f.name, "fc", "", (f.in_features,), (f.out_features,), f.macs)

    last = arch.blocks[-1].conv3
    avgpool = Layer(AVGPOOL, AVGPOOL, "", (last.out_size, last.out_size, last.out_channels), (last.out_channels,), 0)
    return ([conv(arch.stem), pool(arch.pool)] + [conv(c, b) for b in arch.blocks for c in b.convs]
            + [avgpool, fc(arch.fc)])


def kinds_of(kernel: str) -> list[str]:
    """The layer kinds a kernel computes, in the order its name lists them; [JOINS] for batch norm etc."""
    found = []
    for pattern, kind in KERNEL_PATTERNS:
        match = re.search(rf"(^|_)({pattern})(_|$|\d)", kernel)
        if match:
            found.append((match.start(2), kind))
    kinds = [kind for _, kind in sorted(found)]
    if not kinds:
        raise UserError(f"bench/profile.py does not know which layer kernel {kernel!r} belongs to; "
                        f"add its name to KERNEL_PATTERNS")
    layer_kinds = [kind for kind in kinds if kind != JOINS]
    return layer_kinds or [JOINS]


def fits(actual: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    """Is an array of shape `actual` the HWC activation `expected`: as it is, inside a zero border of up to
    MAX_BORDER, or such an array viewed with its last axes merged (rows read as (H, W*C))?"""
    height, width, channels = expected
    return any(actual[0] == height + 2 * border
               and math.prod(actual) == (height + 2 * border) * (width + 2 * border) * channels
               for border in range(MAX_BORDER + 1))


def shapes_match(layer: Layer, kernel: str, arrays: list[np.ndarray]) -> bool:
    """One of a conv call's arrays is the layer's input and another one its output; a Winograd input
    transform has only the input (the output comes two kernels later)."""
    shapes = [a.shape for a in arrays]
    if kernel.startswith(WINOGRAD_START):
        return any(fits(s, layer.in_shape) for s in shapes)
    return any(fits(s_in, layer.in_shape) and fits(s_out, layer.out_shape)
               for i, s_in in enumerate(shapes) for j, s_out in enumerate(shapes) if i != j)


def take(kind: str, kernel: str, arrays: list[np.ndarray], remaining: list[Layer]) -> Layer:
    """The layer a kernel call computes: the next one in forward order, except in a block with a projection
    shortcut, which may run before, between or after the main path's convs: there, the next main-path conv
    or the shortcut, whichever has these shapes. If both have them (layer1.0's conv3 and shortcut), they
    also have the same multiply-adds, and the main path's conv is taken."""
    if not remaining:
        raise UserError(f"kernel {kernel!r} runs after the fc layer; bench/profile.py cannot place it")
    candidates = [remaining[0]]
    if kind == "conv" and remaining[0].block:
        in_block = [layer for layer in remaining if layer.block == remaining[0].block]
        main_path = [layer for layer in in_block if not layer.shortcut]
        candidates = main_path[:1] + [layer for layer in in_block if layer.shortcut]
    found = next((layer for layer in candidates
                  if layer.kind == kind and (kind != "conv" or shapes_match(layer, kernel, arrays))), None)
    if found is None:
        shapes = ", ".join(str(a.shape) for a in arrays)
        raise UserError(f"kernel {kernel!r} (arrays {shapes}) does not fit the next layer {remaining[0].name} "
                        f"({remaining[0].kind}, {remaining[0].in_shape} -> {remaining[0].out_shape}); "
                        f"bench/profile.py cannot place it")
    remaining.remove(found)
    return found


def attribute(calls: list[tuple[str, list[np.ndarray], float]], expected: list[Layer]) -> dict[tuple, float]:
    """Seconds per row of the profile, from the kernel calls of one forward pass (kernel name, arrays,
    seconds). A row is a tuple of layer names: one layer, or the layers one fused kernel computes."""
    remaining = list(expected)
    seconds: dict[tuple, float] = {}
    current = None
    for kernel, arrays, s in calls:
        kinds = kinds_of(kernel)
        if kinds == [JOINS]:
            if current is None:
                raise UserError(f"kernel {kernel!r} runs before the first layer; bench/profile.py cannot place it")
            seconds[current] += s
            continue
        current = tuple(take(kind, kernel, arrays, remaining).name for kind in kinds)
        seconds[current] = s
    if remaining:
        raise UserError(f"the forward pass never ran layer {remaining[0].name} ({len(remaining)} layers unseen); "
                        f"bench/profile.py expects one kernel call to start each layer")
    return seconds


@contextmanager
def kernel_calls(log: list):
    """While active, every Python call of a numba-compiled function appends (name, arrays, seconds) to log."""
    from numba.core.dispatcher import Dispatcher

    original = Dispatcher.__call__

    def timed_call(self, *args, **kwargs):
        start = time.perf_counter()
        result = original(self, *args, **kwargs)
        elapsed = time.perf_counter() - start
        arrays = [a for a in (*args, result) if isinstance(a, np.ndarray)]
        log.append((self.py_func.__name__, arrays, elapsed))
        return result

    Dispatcher.__call__ = timed_call
    try:
        yield log
    finally:
        del Dispatcher.__call__  # back to the compiled base class's own __call__


def profile(stage: str, image: np.ndarray, variant: str, runs: int | None) -> dict:
    """Per-layer seconds and the wall time of a whole forward, averaged over the profiled runs. Means, not
    medians: the layers then add up to the kernels' total, and the shares to 100%."""
    model = stage_module(stage).Model(weights_dir=WEIGHTS_DIR)
    model.forward(image)  # warm-up: compiles what compiles lazily
    if runs is None:
        _, estimate = timed(model.forward, image)
        runs = rounds_for(estimate, PROFILE_SECONDS, MIN_RUNS, MAX_RUNS)
    expected = layers(resnet50(variant))
    per_row: dict[tuple, list[float]] = {}
    walls = []
    for run in range(runs):
        print(f"\r{stage}: profiled forward {run + 1}/{runs}", end="", file=sys.stderr, flush=True)
        calls = []
        with kernel_calls(calls):
            _, wall = timed(model.forward, image)
        for row, s in attribute(calls, expected).items():
            per_row.setdefault(row, []).append(s)
        walls.append(wall)
    print(file=sys.stderr)
    return {"layers": expected, "seconds": {row: statistics.fmean(v) for row, v in per_row.items()},
            "forward_s": statistics.fmean(walls), "runs": runs}


def table(result: dict) -> str:
    forward_s = result["forward_s"]
    header = f"{'layer':<22} {'input (HWC)':>15} {'output':>15} {'MMACs':>8} {'ms':>9} {'GFLOP/s':>8} {'share':>7}"
    lines = [header, "-" * len(header)]

    def line(name, shape_in, shape_out, macs, s):
        gflops = f"{FLOPS_PER_MAC * macs / s / GIGA:8.1f}" if macs and s > 0 else f"{'-':>8}"
        mmacs = f"{macs / MEGA:8.1f}" if macs else f"{'-':>8}"
        lines.append(f"{name:<22} {shape_in:>15} {shape_out:>15} {mmacs} {s * MS_PER_S:9.2f} {gflops} "
                     f"{s / forward_s * PERCENT:6.1f}%")

    by_name = {layer.name: layer for layer in result["layers"]}
    position = {layer.name: i for i, layer in enumerate(result["layers"])}
    for row, s in sorted(result["seconds"].items(), key=lambda item: position[item[0][0]]):
        first, last = by_name[row[0]], by_name[row[-1]]
        line("+".join(row), "x".join(map(str, first.in_shape)), "x".join(map(str, last.out_shape)),
             sum(by_name[name].macs for name in row), s)
    kernels_s = sum(result["seconds"].values())
    total_macs = sum(layer.macs for layer in result["layers"])
    lines.append("-" * len(header))
    line("all kernels", "", "", total_macs, kernels_s)
    line("outside the kernels", "", "", 0, forward_s - kernels_s)
    line("forward (wall)", "", "", total_macs, forward_s)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", help="stage folder name, e.g. stage6_threads")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="photo to run (default: %(default)s)")
    parser.add_argument("--threads", type=positive_int, default=os.cpu_count(),
                        help="numba threads (default: all cores)")
    parser.add_argument("--runs", type=positive_int,
                        help="profiled forward passes (default: as many as fit in a few seconds)")
    args = parser.parse_args(argv)
    import numba

    try:
        stage = check_stage(args.stage)
        if args.threads > numba.config.NUMBA_NUM_THREADS:
            raise UserError(f"--threads {args.threads}: at most {numba.config.NUMBA_NUM_THREADS} "
                            f"(numba's NUMBA_NUM_THREADS)")
        numba.set_num_threads(args.threads)
        manifest = load_manifest(WEIGHTS_DIR)
        image = load_image(args.image, manifest["preprocessing"])
        result = profile(stage, image, manifest["variant"], args.runs)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{stage}: per-layer time, mean of {result['runs']} profiled forward pass(es) on {args.image.name}, "
          f"{args.threads} thread(s); ResNet-50 {manifest['variant']}")
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
