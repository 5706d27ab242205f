"""The 1x1 conv of every layer shape, alone, in every stage from 2 on: its GFLOP/s against the measured peak.

flame's how-to-optimize-gemm and siboehm's SGEMM_CUDA end each step with one plot: the kernel's speed, step by step,
against what the machine can do. This is the course's: for each distinct 1x1 conv of ResNet-50 (the network's
most common kind of layer: 36 of its 53 convs), each stage's own conv kernel runs alone on that layer's arrays,
as the stage's forward pass gives them, as many times as fit in a fraction of a second, and the median call is
kept. That is done in ROUNDS rounds, every stage and shape taking its turn in each, and the fastest round's median
is kept: the machines are shared, and another tenant's busy minute would otherwise show as one slow kernel.
A stage that generates its kernels (5 on) is built, and the kernel of the step that computes the layer (the first
conv of that shape in its plan) is called with that step's arrays; stages 2-4 call their conv2d with arrays of
the layer's shapes. Multiply-adds are the layer's own (a stage that rewrites the network computes some 1x1 convs
on a quarter of the pixels: those are the shapes it times). Each row is drawn against the peak of the instruction
its record names (bench.peak: the FMA's for float32, vpdpbusd's for int8, vdpbf16ps's for bfloat16), so that a
line near the top is a kernel that runs as fast as the arithmetic goes.

    python -m bench.kernels [--stages all|2,8,16] [--threads N] [--out DIR]    # kernels.json, kernels.png there

`make bench` runs it after the table.
"""

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import cpuinfo
import numba
import numpy as np

from bench.paths import FLOPS_PER_MAC, GIGA, KERNELS_JSON, KERNELS_PNG, RESULTS_DIR
from bench.peak import amx_peak_flops, bf16_peak_flops, int8_peak_ops, peak_flops
from bench.rows import select_stages
from common.architecture import Conv, resnet50
from common.cli import positive_int, set_threads
from common.errors import run_reporting_errors
from common.paths import WEIGHTS_DIR
from common.stages import record, stage_module, stage_number
from common.tiles import first_of_each_shape
from common.weights import load_manifest

FIRST_STAGE = 2  # stage 1's plain Python-speed loops take seconds a layer
SECONDS_PER_KERNEL = 0.1  # calls of one kernel on one layer in one round, as many as fit
ROUNDS = 3  # every kernel's turn comes this many times; its fastest round is kept
MIN_CALLS, MAX_CALLS = 3, 200
POINTWISE = 1  # a 1x1 conv's kernel size
SEED = 0
CHART_INCHES = (13.0, 6.5)
DPI = 110


def one_by_one(arch) -> dict[str, Conv]:
    """The first 1x1 conv of each distinct shape, in forward order, by shape name."""
    return first_of_each_shape(conv for conv in arch.convs if conv.kernel == POINTWISE)


def median_call_s(call) -> float:
    """The median time of call(), called as often as fits in SECONDS_PER_KERNEL (after one untimed call)."""
    call()
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    calls = max(MIN_CALLS, min(MAX_CALLS, int(SECONDS_PER_KERNEL / max(first, 1e-9))))
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def looped_calls(stage: str, weights_dir: Path) -> dict[str, tuple[Conv, object]]:
    """{shape: (conv, a call of the stage's kernel for it)}: a stage's 1x1 conv kernels, each ready to call alone."""
    module = stage_module(stage)
    if record(stage).generates:
        model = module.Model(weights_dir)
        calls = {}
        for shape, conv in one_by_one(model.arch).items():
            step = next(s for s in model.plan.of(conv.name) if s.kernel.startswith("conv"))
            kernel = getattr(model.kernels, step.kernel)
            calls[shape] = (conv, lambda kernel=kernel, step=step: kernel(*step.arrays))
        return calls
    # stages 2-4: conv2d(x HWC, weight OHWI, stride, padding[, out]) on arrays of the layer's shapes
    rng = np.random.default_rng(SEED)
    calls = {}
    for shape, conv in one_by_one(resnet50(load_manifest(weights_dir)["variant"])).items():
        x = rng.standard_normal((conv.in_size, conv.in_size, conv.in_channels)).astype(np.float32)
        weight = rng.standard_normal((conv.out_channels, 1, 1, conv.in_channels)).astype(np.float32)
        args = (x, weight, conv.stride, conv.padding)
        if record(stage).number >= 4:  # stage 4 on: the output is a buffer it is given
            args += (np.empty((conv.out_size, conv.out_size, conv.out_channels), np.float32),)
        calls[shape] = (conv, lambda args=args: module.conv2d(*args))
    return calls


def measure(stages: list[str], weights_dir: Path) -> dict:
    calls = {}
    for stage in stages:
        print(f"{stage}: building its 1x1 conv kernels", file=sys.stderr, flush=True)
        calls[stage] = looped_calls(stage, weights_dir)
    seconds = {stage: {shape: [] for shape in by_shape} for stage, by_shape in calls.items()}
    for round_ in range(ROUNDS):
        print(f"round {round_ + 1} of {ROUNDS}: every kernel alone", file=sys.stderr, flush=True)
        for stage, by_shape in calls.items():
            for shape, (_, call) in by_shape.items():
                seconds[stage][shape].append(median_call_s(call))
    rows = {stage: {shape: FLOPS_PER_MAC * conv.macs / min(seconds[stage][shape]) / GIGA
                    for shape, (conv, _) in by_shape.items()} for stage, by_shape in calls.items()}
    threads = numba.get_num_threads()
    peaks = {"fma": peak_flops(threads), "vpdpbusd": int8_peak_ops(threads), "vdpbf16ps": bf16_peak_flops(threads),
             "tdpbf16ps": amx_peak_flops(threads)}
    shapes = list(one_by_one(resnet50(load_manifest(weights_dir)["variant"])))
    shapes += [shape for by_shape in rows.values() for shape in by_shape if shape not in shapes]  # rewritten ones
    return {"threads": threads, "shapes": list(dict.fromkeys(shapes)), "gflops": rows,
            "peaks_gflops": {name: peak / GIGA for name, peak in peaks.items() if peak},
            "peak_of": {stage: record(stage).peak for stage in stages}}


def chart(result: dict, path: Path) -> None:
    """One line per stage over the layer shapes, GFLOP/s on a log axis, and a dashed line per measured peak."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=CHART_INCHES)
    stages = list(result["gflops"])
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, len(stages)))
    for stage, colour in zip(stages, colours, strict=True):
        by_shape = result["gflops"][stage]
        at = sorted(result["shapes"].index(shape) for shape in by_shape)  # a rewriting stage skips some shapes
        ax.plot(at, [by_shape[result["shapes"][i]] for i in at], marker="o", color=colour,
                label=f"{stage_number(stage)}: {stage}")
    for name, peak in result["peaks_gflops"].items():
        ax.axhline(peak, linestyle="--", color="0.4", linewidth=0.8)
        ax.text(0, peak, f" {name} peak {peak:.0f}", va="bottom", fontsize=8, color="0.3")
    ax.set_yscale("log")
    ax.set_xticks(range(len(result["shapes"])), result["shapes"], rotation=40, ha="right", fontsize=7)
    ax.set_ylabel("GFLOP/s (int8: GOP/s), one kernel alone")
    ax.set_title(f"The 1x1 conv of each layer shape, each stage's kernel alone, {result['threads']} thread(s); "
                 f"{result['cpu']}, {result['date']}", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kernels", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", default="all", help="all, or numbers/names such as 2,8,16 (from stage 2 on)")
    parser.add_argument("--threads", type=positive_int, default=numba.config.NUMBA_NUM_THREADS, metavar="N")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for kernels.json and kernels.png")
    args = parser.parse_args(argv)

    def run() -> int:
        set_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
        stages = [s for s in select_stages(args.stages) if stage_number(s) >= FIRST_STAGE]
        result = measure(stages, WEIGHTS_DIR) | {"cpu": cpuinfo.get_cpu_info().get("brand_raw", "unknown"),
                                                 "date": datetime.now(UTC).date().isoformat()}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / KERNELS_JSON).write_text(json.dumps(result, indent=1) + "\n")
        chart(result, args.out / KERNELS_PNG)
        print(f"wrote {args.out / KERNELS_JSON} and {args.out / KERNELS_PNG}")
        return 0

    return run_reporting_errors(run)


if __name__ == "__main__":
    sys.exit(main())
