"""`make stageN profile`: where one stage's forward pass spends its time, layer by layer.

    python -m bench.profile STAGE [--image PATH] [--threads N] [--runs N] [--vs openvino|openvino-bf16]

Every call from Python into a numba kernel during a profiled forward pass is timed and given to the layer
it computes, in forward order, by common.trace (the same tracing that explain/ uses to capture activations;
its docstring says how calls are placed). A kernel it cannot place stops the profile with an error instead
of a guess. Time outside the kernels (Python, and for stages 1-2 weight loading) is its own row. Nothing in
the stage folders is changed. `--vs openvino` then sets OpenVINO's own per-node times beside ours, layer by
layer, with the kernel it ran for each (bench/openvino_profile.py); `--vs openvino-bf16` does the same with
OpenVINO in bfloat16, beside a bfloat16 stage.
"""

import argparse
import os
import statistics
import sys
from pathlib import Path

import numpy as np

from bench import openvino_profile
from bench.paths import FLOPS_PER_MAC, GIGA, PERCENT
from bench.rows import DEFAULT_IMAGE, check_stage, rounds_for
from common.cli import positive_int, set_threads
from common.errors import UserError
from common.image import load_image
from common.paths import WEIGHTS_DIR
from common.stages import stage_module
from common.timing import MS_PER_S, timed
from common.trace import attribute, kernel_calls, layers
from common.weights import load_manifest

PROFILE_SECONDS = 5.0  # profiled forward passes: as many as fit, within MIN_RUNS..MAX_RUNS
MIN_RUNS, MAX_RUNS = 1, 20
MEGA = 1e6


def profile(stage: str, image: np.ndarray, runs: int | None) -> dict:
    """Per-layer seconds and the wall time of a whole forward, averaged over the profiled runs. Means, not
    medians: the layers then add up to the kernels' total, and the shares to 100%."""
    model = stage_module(stage).Model(weights_dir=WEIGHTS_DIR)
    model.forward(image)  # warm-up: compiles what compiles lazily
    if runs is None:
        _, estimate = timed(model.forward, image)
        runs = rounds_for(estimate, PROFILE_SECONDS, MIN_RUNS, MAX_RUNS)
    expected = layers(model.arch)  # the network as the stage computes it (stage 16 rewrites it)
    per_row: dict[tuple, list[float]] = {}
    walls = []
    for run in range(runs):
        print(f"\r{stage}: profiled forward {run + 1}/{runs}", end="", file=sys.stderr, flush=True)
        calls = []
        with kernel_calls(calls.append):
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
    parser.add_argument("--vs", metavar="LIBRARY", help=f"also profile LIBRARY's own nodes beside ours, "
                        f"on as many threads (one of: {', '.join(openvino_profile.LIBRARIES)})")
    args = parser.parse_args(argv)
    try:
        if args.vs not in (None, *openvino_profile.LIBRARIES):
            raise UserError(f"--vs {args.vs}: only {' or '.join(openvino_profile.LIBRARIES)} can be profiled "
                            f"beside ours")
        stage = check_stage(args.stage)
        set_threads(args.threads)
        manifest = load_manifest(WEIGHTS_DIR)
        image = load_image(args.image, manifest["preprocessing"])
        result = profile(stage, image, args.runs)
        theirs = (openvino_profile.profile(WEIGHTS_DIR, image, args.threads, result["runs"], result["layers"],
                                           args.vs) if args.vs else None)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{stage}: per-layer time, mean of {result['runs']} profiled forward pass(es) on {args.image.name}, "
          f"{args.threads} thread(s); ResNet-50 {manifest['variant']}")
    print(table(result))
    if theirs:
        print()
        print(openvino_profile.table(result, theirs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
