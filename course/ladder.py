"""Where the time goes across the ladder: every stage's forward pass split by the kind of op, in one chart.

    python -m course.ladder [--stages 1,7,11] [--runs N] [--threads N] [--image PATH]
    python -m course.ladder --redraw        (ladder.png again from ladder.json, without tracing)

Each stage is traced as `make stageN profile` traces it (common.trace: every call from Python into a numba
kernel is timed and placed in the layer it computes), and each call's time goes to the class of op it
computes: the stem's 7x7 conv, the 1x1 convs, the 3x3 convs, the pools, the fc layer, or the other passes
(batch norm, ReLU and the residual add, where a stage runs them as kernels of their own; from stage 7 on they
are part of the conv's output loop). A Winograd conv's products and output transform are that 3x3 conv's own
work, although common.trace files them with batch norm and ReLU as calls that join the layer in progress.
What is left of the wall time is outside the kernels: Python, and for stages 1-2 the weights read from disk
inside every pass. The split shown is that of the stage's fastest traced pass: its classes add up to one real
pass, and on a machine shared with other work a pass can only be slowed down, the threaded stages most (each
parallel step waits for its slowest thread). For the same reason the passes of all stages are interleaved, in
rounds, after every model is built.

Writes bench/results/ladder.json (the machine, the date, per stage the ms of each class) and ladder.png:
one stacked bar per stage of the shares of its pass, which show how each idea moves time between classes, and
beside it each class's milliseconds on a log axis.
"""

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

import numpy as np

from bench.paths import LADDER_JSON, PERCENT, RESULTS_DIR
from bench.rows import DEFAULT_IMAGE, rounds_for, select_stages
from common.architecture import resnet50
from common.cli import positive_int, set_threads
from common.errors import UserError
from common.image import load_image
from common.paths import WEIGHTS_DIR
from common.stages import stage_module
from common.timing import MS_PER_S, timed
from common.trace import JOINS, STEM, Layer, Placer, kernel_calls, kinds_of, layers
from common.weights import load_manifest

LADDER_PNG = "ladder.png"
# The classes of op, by the short name ladder.json and the READMEs' markers (bench/readme.py) use.
STEM_CLASS, POOLING, FC, OTHER, OUTSIDE = "stem", "pool", "fc", "other", "outside"
CONV_CLASSES = {1: "1x1", 3: "3x3"}  # by kernel size, outside the stem
CLASSES = {STEM_CLASS: "stem 7x7 conv", CONV_CLASSES[1]: "1x1 convs", CONV_CLASSES[3]: "3x3 convs",
           POOLING: "pooling", FC: "fc", OTHER: "other passes (batch norm, ReLU, add)",
           OUTSIDE: "outside the kernels (Python; stages 1-2 read weights)"}
LAYER_CLASSES = {"maxpool": POOLING, "avgpool": POOLING, "fc": FC}  # common.trace's layer kinds besides conv
WINOGRAD_PREFIX = "winograd_"  # the three kernels of one Winograd conv (stages 10-11)
COLOURS = ("#8c564b", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#d62728", "#7f7f7f")
PASS_SECONDS = 8.0  # traced passes per stage: as many as fit, within MIN_RUNS..MAX_RUNS
MIN_RUNS, MAX_RUNS = 3, 30
ROUNDS = MIN_RUNS  # the passes of all stages are interleaved in this many rounds: at least one pass each
ROW_INCHES, FRAME_INCHES = 0.42, 2.0  # chart height per stage, and for the titles and the legend
LEGEND_INCHES = 0.55  # kept free at the bottom edge for the legend's two lines
MIN_MS = 0.1  # the log axis starts here: a class of less is not drawn (stage 7 on have no separate passes)
LABEL_GAP = 1.3  # a pass's total is written this factor right of its point (the axis is logarithmic)
AXIS_ROOM = 4.0  # the milliseconds axis reaches this factor beyond the slowest pass, for its label


def layer_class(layer: Layer, kernel_sizes: dict[str, int]) -> str:
    if layer.kind == "conv":
        return STEM_CLASS if layer.group == STEM else CONV_CLASSES[kernel_sizes[layer.name]]
    return LAYER_CLASSES[layer.kind]


def call_class(kernel: str, placed: tuple[Layer, ...], kernel_sizes: dict[str, int]) -> str:
    """The class of one kernel call, given the layers common.trace placed it in."""
    if kinds_of(kernel) == [JOINS] and not kernel.startswith(WINOGRAD_PREFIX):
        return OTHER
    classes = {layer_class(layer, kernel_sizes) for layer in placed}
    if len(classes) > 1:
        raise UserError(f"kernel {kernel!r} computes layers of several classes ({', '.join(sorted(classes))}); "
                        f"course/ladder.py cannot split its time")
    return classes.pop()


def split(calls: list[tuple[str, list[np.ndarray], float]], expected: list[Layer], kernel_sizes: dict[str, int],
          wall_s: float) -> dict[str, float]:
    """Milliseconds per class of one traced forward pass, in CLASSES order; OUTSIDE is the wall time left."""
    placer = Placer(expected)
    seconds = dict.fromkeys(CLASSES, 0.0)
    for kernel, arrays, s in calls:
        seconds[call_class(kernel, placer.place(kernel, arrays), kernel_sizes)] += s
    placer.finish()
    seconds[OUTSIDE] = wall_s - sum(seconds.values())
    return {name: s * MS_PER_S for name, s in seconds.items()}


def traced_pass(model, image: np.ndarray, expected: list[Layer], kernel_sizes: dict[str, int]):
    """(wall seconds, ms per class) of one traced forward pass."""
    calls = []
    with kernel_calls(calls.append):
        _, wall = timed(model.forward, image)
    return wall, split(calls, expected, kernel_sizes, wall)


def trace_stages(stages: list[str], image: np.ndarray, variant: str, runs: int | None) -> dict:
    """Per stage, the split of its fastest traced pass and every traced pass's wall time. All models are built
    first; then the passes run in ROUNDS rounds, each stage its share of passes in every round, so that a busy
    spell of a shared machine slows some passes of every stage rather than all passes of one."""
    arch = resnet50(variant)
    kernel_sizes = {conv.name: conv.kernel for conv in arch.convs}
    models, counts = {}, {}
    for stage in stages:
        print(f"{stage}: build and warm-up", file=sys.stderr, flush=True)
        models[stage] = stage_module(stage).Model(weights_dir=WEIGHTS_DIR)
        _, estimate = timed(models[stage].forward, image)  # warm-up: compiles what compiles lazily
        counts[stage] = runs or rounds_for(estimate, PASS_SECONDS, MIN_RUNS, MAX_RUNS)
    passes = {stage: [] for stage in stages}
    for round_ in range(ROUNDS):
        for stage in stages:
            share = counts[stage] * (round_ + 1) // ROUNDS - counts[stage] * round_ // ROUNDS
            print(f"\rround {round_ + 1}/{ROUNDS}: {stage:<20}", end="", file=sys.stderr, flush=True)
            passes[stage] += [traced_pass(models[stage], image, layers(models[stage].arch), kernel_sizes)
                              for _ in range(share)]
    print(file=sys.stderr)
    result = {}
    for stage, traced in passes.items():
        wall, ms = min(traced, key=lambda p: p[0])
        result[stage] = {"runs": len(traced), "wall_ms": wall * MS_PER_S,
                         "all_wall_ms": sorted(w * MS_PER_S for w, _ in traced), "ms": ms}
    return result


def machine(threads: int) -> dict:
    import cpuinfo

    info = cpuinfo.get_cpu_info()
    return {"cpu": info.get("brand_raw", "unknown"), "family": info.get("family"), "model": info.get("model"),
            "cores": os.cpu_count(), "threads": threads}


def machine_line(result: dict) -> str:
    m = result["machine"]
    return (f"{m['cpu']} (family {m['family']}, model {m['model']}), {m['cores']} cores, {m['threads']} threads, "
            f"{result['datetime'][:10]}")


def draw(result: dict, path: Path) -> None:
    """Two panels, one row per stage: a stacked bar of the shares of the stage's pass (how each idea moves time
    between classes), and each class's milliseconds on a log axis (stage 1 and the last stages are 100-fold
    apart), the whole pass in black with its value."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    stages = list(result["stages"])
    ms = np.array([[result["stages"][s]["ms"][c] for c in CLASSES] for s in stages])
    totals = ms.sum(axis=1)
    shares = ms / totals[:, None] * PERCENT
    height = ROW_INCHES * len(stages) + FRAME_INCHES
    fig, (relative, absolute) = plt.subplots(1, 2, figsize=(13, height), sharey=True)
    positions = np.arange(len(stages))
    left = np.zeros(len(stages))
    for column, (label, colour) in enumerate(zip(CLASSES.values(), COLOURS, strict=True)):
        relative.barh(positions, shares[:, column], left=left, color=colour, label=label)
        left += shares[:, column]
        shown = np.where(ms[:, column] >= MIN_MS, ms[:, column], np.nan)  # a class a stage has not: no point
        absolute.plot(shown, positions, marker="o", markersize=4, color=colour)
    absolute.plot(totals, positions, marker="s", color="black", label="the whole pass")
    for y, total in zip(positions, totals, strict=True):
        absolute.text(total * LABEL_GAP, y, f"{total:.0f} ms" if total >= 100 else f"{total:.1f} ms",
                      va="center", fontsize=8)
    relative.set_xlim(0, PERCENT)
    relative.set_xlabel("% of the stage's forward pass")
    absolute.set_xscale("log")
    absolute.set_xlim(MIN_MS / LABEL_GAP, totals.max() * AXIS_ROOM)
    absolute.set_xlabel(f"ms per forward pass, by class of op (log scale; under {MIN_MS} ms not drawn)")
    for panel in (relative, absolute):
        panel.grid(axis="x", alpha=0.3)
    relative.set_yticks(positions, stages)
    relative.invert_yaxis()  # stage 1 on top
    handles, labels = relative.get_legend_handles_labels()
    total_handles, total_labels = absolute.get_legend_handles_labels()
    fig.legend(handles + total_handles, labels + total_labels, loc="lower center", ncol=4, fontsize=8,
               frameon=False)
    runs = sorted({r["runs"] for r in result["stages"].values()})
    counts = f"{runs[0]}" if len(runs) == 1 else f"{runs[0]}-{runs[-1]}"
    fig.suptitle(f"ResNet-50, one {result['image']} image: where each stage's time goes (per stage, the fastest "
                 f"of {counts} traced passes)\n{machine_line(result)}", fontsize=10)
    fig.tight_layout(rect=(0, LEGEND_INCHES / height, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(result: dict) -> str:
    header = f"{'stage':<20}" + "".join(f" {name:>9}" for name in CLASSES) + f" {'wall':>9}"
    lines = [header, "-" * len(header)]
    for stage, r in result["stages"].items():
        lines.append(f"{stage:<20}" + "".join(f" {r['ms'][c]:9.2f}" for c in CLASSES) + f" {r['wall_ms']:9.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course.ladder", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", default="all", help="stage numbers or names, comma-separated (default: all)")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="photo to run (default: %(default)s)")
    parser.add_argument("--threads", type=positive_int, default=os.cpu_count(),
                        help="numba threads (default: all cores)")
    parser.add_argument("--runs", type=positive_int,
                        help=f"traced passes per stage (default: as many as fit in {PASS_SECONDS:.0f} s, "
                             f"{MIN_RUNS} to {MAX_RUNS})")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="output folder (default: %(default)s)")
    parser.add_argument("--redraw", action="store_true", help=f"draw {LADDER_PNG} again from {LADDER_JSON}")
    args = parser.parse_args(argv)
    if args.redraw:
        try:
            draw(json.loads((args.out / LADDER_JSON).read_text()), args.out / LADDER_PNG)
        except (OSError, ValueError) as e:
            print(f"error: {e}; run `python -m course.ladder` first", file=sys.stderr)
            return 1
        print(f"wrote {args.out / LADDER_PNG}")
        return 0
    try:
        stages = select_stages(args.stages)
        set_threads(args.threads)
        manifest = load_manifest(WEIGHTS_DIR)
        image = load_image(args.image, manifest["preprocessing"])
        result = {"datetime": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                  "machine": machine(args.threads), "image": args.image.name, "variant": manifest["variant"],
                  "classes": CLASSES,
                  "stages": trace_stages(stages, image, manifest["variant"], args.runs)}
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / LADDER_JSON).write_text(json.dumps(result, indent=1) + "\n")
    draw(result, args.out / LADDER_PNG)
    print(f"ms per class of op, the fastest traced pass of each stage; {machine_line(result)}")
    print(table(result))
    print("; ".join(f"{name}: {label}" for name, label in CLASSES.items()))
    print(f"wrote {args.out / LADDER_JSON}, {args.out / LADDER_PNG}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
