"""Comparisons that noise cannot decide: one stage against the peers, the rows taking turns in blocks.

    python -m bench.interleaved [--stage STAGE] [--peers all|pytorch,...] [--blocks N] [--passes N]
                                [--threads N] [--image PATH] [--out DIR] [--busy]

On a shared machine a row's median drifts by 20-40% from one minute to the next, so two rows measured one after
the other differ as much by when they ran as by what they compute. Here every row is built in one process, and
then the rows take turns: block 1 of each row, then block 2 of each row, and so on. A block is one untimed
forward pass (it lets the previous row's threads fall idle and brings this row's weights back into the caches)
and PASSES timed ones; the block's time is their median. A slow minute then slows the blocks of one round
alike, and the ratio of the stage's block to a peer's block of the same round cancels it. Reported per peer:
the median of those ratios over the rounds, with their quartiles (the spread), so that a ratio of 0.97 with
quartiles 0.93-1.02 reads as "level", and 0.80-0.85 as "faster". Below 1, the stage takes less time. Of the
peers named, only those that compute in the stage's precision take part (bench.rows.same_precision): a float32
stage against the float32 peers, an int8 stage against the int8 ones.

`make bench` runs it after the other rows (for the fastest stage, unless --no-interleaved) and writes its result
to DIR/interleaved.json, which bench/report.py puts into the table's Markdown.

--busy (`make bench ARGS=--busy`) measures the same with one core kept busy by another program
(bench/busy.py), as on a learner's laptop: a parallel loop waits for its slowest thread, and the thread that
shares the busy core is slow, so more threads can take longer than one. The first row is then the stage at the
thread count its command line chooses when nobody says `--threads` (one per core the other programs leave free,
common/cpu_load.py), compared with the stage at all threads, at 1 thread and with the peers. Written to
DIR/busy.json.
"""

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import cpuinfo
import numpy as np

from bench.busy import busy_core
from bench.paths import BUSY_JSON, INTERLEAVED_JSON, RESULTS_DIR
from bench.peers import FLOAT32
from bench.rows import DEFAULT_IMAGE, build, check_stage, precision, same_precision, select_peers
from common.cli import positive_int
from common.cpu_load import OtherPrograms
from common.errors import UserError, run_reporting_errors
from common.image import load_image
from common.paths import WEIGHTS_DIR
from common.stages import FASTEST
from common.timing import MS_PER_S
from common.weights import load_manifest

BLOCKS = 16  # rounds: enough for quartiles of the ratios
PASSES = 10  # timed forward passes per block
QUARTILES = 4


def block_ms(model, image: np.ndarray, passes: int) -> float:
    """One block: an untimed pass, then the median of `passes` timed ones, in milliseconds."""
    model.forward(image)
    seconds = []
    for _ in range(passes):
        start = time.perf_counter()
        model.forward(image)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds) * MS_PER_S


def spread(values: list[float]) -> dict[str, float]:
    q1, median, q3 = statistics.quantiles(values, n=QUARTILES, method="inclusive")
    return {"median": median, "q1": q1, "q3": q3, "min": min(values), "max": max(values)}


def interleaved(stage: str, peers: list[str], image: np.ndarray, threads: int, blocks: int, passes: int,
                busy: bool = False, log=sys.stderr) -> dict:
    """{"rows": {row: [block ms, ...]}, "ratios": {row: spread of the first row's block / that row's block}} and
    the settings. The first row is the stage at `threads`; with busy, at the thread count its command line would
    choose (common/cpu_load.py, measured while it builds), followed by the stage at `threads` and at 1 thread (the
    same model: numba's thread count is set before each block)."""
    import numba

    threads = min(threads, numba.config.NUMBA_NUM_THREADS)
    if "pytorch" in peers:
        import torch

        torch.set_num_threads(threads)
    models, top1 = {}, {}
    for name in [stage, *peers]:
        print(f"interleaved: building {name}", file=log, flush=True)
        with OtherPrograms() as others:
            models[name] = build(name, WEIGHTS_DIR, threads)
        if name == stage:
            chosen = others.free_cores()
        numba.set_num_threads(threads)
        top1[name] = int(np.argmax(models[name].forward(image)))  # the first pass compiles what compiles lazily
    if len(set(top1.values())) > 1:  # a fast wrong answer is not a result
        raise UserError(f"the rows disagree on the image's class: {top1}")
    counts = {f"{stage}, default ({plural(chosen)})": chosen, f"{stage}, {plural(threads)}": threads,
              f"{stage}, 1 thread": 1} if busy else {stage: threads}
    rows = {name: (models[stage], count) for name, count in counts.items()}
    rows |= {peer: (models[peer], threads) for peer in peers}
    times = {name: [] for name in rows}
    for block in range(blocks):
        for name, (model, count) in rows.items():
            numba.set_num_threads(count)
            times[name].append(block_ms(model, image, passes))
        print(f"\rinterleaved: round {block + 1}/{blocks}", end="", file=log, flush=True)
    print(file=log)
    first = next(iter(rows))
    ratios = {name: spread([ours / theirs for ours, theirs in zip(times[first], times[name], strict=True)])
              for name in rows if name != first}
    return {"stage": stage, "first": first, "peers": peers, "blocks": blocks, "passes": passes, "threads": threads,
            "rows": times, "medians_ms": {name: statistics.median(t) for name, t in times.items()}, "ratios": ratios}


def plural(threads: int) -> str:
    return f"{threads} thread{'s' if threads > 1 else ''}"


def markdown(result: dict) -> str:
    """The result as a Markdown table: each row's ratio with its quartiles, and each row's median block."""
    stage = result["first"]
    busy = "with one core kept busy by another process, " if result.get("busy") else ""
    lines = [f"{stage} against each row on {result['cpu']}, {result['datetime'][:10]}, {busy}interleaved in one "
             f"process: {result['blocks']} rounds, each a block of "
             f"{result['passes']} timed passes per row after one untimed pass, {result['threads']} threads; "
             f"{stage}'s block time over the row's in the same round (below 1: {stage} takes less time)",
             "", "| row | median ratio | quartiles | min-max | row's median block ms | "
             f"{stage} median block ms |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in result["ratios"].items():
        lines.append(f"| {name} | {r['median']:.2f} | {r['q1']:.2f}-{r['q3']:.2f} | {r['min']:.2f}-{r['max']:.2f} | "
                     f"{result['medians_ms'][name]:.2f} | {result['medians_ms'][stage]:.2f} |")
    return "\n".join(lines) + "\n"


def result_name(stage: str, busy: bool) -> str:
    """The file a comparison is written to: one per precision (interleaved.json for float32), busy.json."""
    if busy:
        return BUSY_JSON
    kind = precision(stage)
    return INTERLEAVED_JSON if kind == FLOAT32 else INTERLEAVED_JSON.replace(".json", f"-{kind}.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.interleaved", description=__doc__.split("\n")[0])
    parser.add_argument("--stage", default=FASTEST, type=check_stage, help="default: the fastest float32 stage")
    parser.add_argument("--peers", default="all",
                        help="all, or a comma list (default: all); those of the stage's precision take part")
    parser.add_argument("--blocks", type=positive_int, default=BLOCKS)
    parser.add_argument("--passes", type=positive_int, default=PASSES)
    parser.add_argument("--threads", type=positive_int, default=os.cpu_count())
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--out", type=Path, help=f"write {INTERLEAVED_JSON} (or {BUSY_JSON}) there "
                                                 f"(make bench: {RESULTS_DIR})")
    parser.add_argument("--busy", action="store_true", help="with one core kept busy, and the stage at 1 thread")
    args = parser.parse_args(argv)
    peers = same_precision(args.stage, select_peers(args.peers))  # float32 against float32, int8 against int8
    if not peers and not args.busy:
        raise UserError(f"--peers: name at least one peer to compare with that computes in {precision(args.stage)}, "
                        f"as {args.stage} does")
    image = load_image(args.image, load_manifest(WEIGHTS_DIR)["preprocessing"])
    with busy_core() if args.busy else contextlib.nullcontext() as core:
        if core is not None:
            print(f"interleaved: core {core} kept busy by process {os.getpid()}'s child", file=sys.stderr)
        result = interleaved(args.stage, peers, image, args.threads, args.blocks, args.passes, args.busy)
    result |= {"datetime": datetime.now(UTC).isoformat(), "image": args.image.name, "busy": args.busy,
               "cpu": cpuinfo.get_cpu_info().get("brand_raw", "unknown")}
    print(markdown(result))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / result_name(args.stage, args.busy)).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
