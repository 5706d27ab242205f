"""`make bench`: run bench/test_latency.py and bench/test_end_to_end.py under pytest-benchmark, then write the report.

    python -m bench [--out DIR] [--stages 3,4] [--peers all|none|pytorch,...] [--threads N] [--seconds S]
                    [--min-rounds N] [--max-rounds N] [--image PATH] [--photos N] [--no-first-answer] [--avx2]
                    [--no-interleaved] [--blocks N] [--passes N] [--busy] [any pytest or pytest-benchmark option]

--avx2 runs the tiled stages a second time, in a process whose numba compiles for an AVX2 CPU (Haswell:
no AVX-512), and reports that build's figures beside the native ones.

Every run is also saved under DIR/history/ (pytest-benchmark's storage), so that a later run can be compared
with it: `python -m bench --benchmark-compare` compares with the last saved run, `--benchmark-compare=0003`
with run 0003. bench/README.md explains the options and the columns.

After the rows, the fastest float32 stage chosen is compared with the float32 peers chosen once more, the rows
taking turns in blocks in one process (bench/interleaved.py): the ratios that decide "faster or not" on a noisy
machine; so is the fastest stage of each reduced precision with the peers of its precision.
--blocks and --passes are its rounds and timed passes per block; --no-interleaved leaves it out. Where a
reduced-precision stage is chosen, bench/accuracy.py then measures what its precision costs, and that of the peers
of its precision, against the fastest float32 stage on common.photos' evaluation inputs (accuracy.json, .md).
bench/kernels.py then times each stage's 1x1 conv kernels alone and charts them against the peaks (kernels.json,
kernels.png).

--busy runs that comparison only, with one core kept busy by another process and the stage at 1 thread as one
more row (bench/interleaved.py, bench/busy.py): is the stage still faster with all its threads than with one?
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.interleaved import BLOCKS, PASSES
from bench.paths import INTERLEAVED_GLOB, RAW_JSON, RESULTS_DIR
from bench.peers import FLOAT32
from bench.report import main as report_main
from bench.rows import ALL, DEFAULT_IMAGE, precision, same_precision, select_peers, select_stages
from common.cli import positive_int
from common.errors import UserError
from common.stages import tiled
from common.target import AVX2_TARGET

# Forward-only rows first, then the fastest stage end to end, which is compared with its forward-only row.
BENCH_MODULES = [Path(__file__).resolve().parent / name for name in ("test_latency.py", "test_end_to_end.py")]
HISTORY = "history"
AVX2_DIR = "avx2"


def pytest_args(out: Path, extra: list[str]) -> list[str]:
    comparing = any(a.startswith("--benchmark-compare") for a in extra)
    # pytest-benchmark's own table is only shown to compare runs (report.py prints ours), and narrowed to the
    # columns that matter here; options in `extra` come later and win.
    own_table = ["--benchmark-columns=median,min,max,rounds"] if comparing else ["--benchmark-quiet"]
    return [
        *map(str, BENCH_MODULES), "-q", "-p", "no:cacheprovider",
        "--benchmark-enable", "--benchmark-only",  # pyproject's addopts disable benchmarks for the unit tests
        f"--benchmark-json={out / RAW_JSON}", "--benchmark-save-data",
        "--benchmark-autosave", f"--benchmark-storage=file://{out / HISTORY}",
        *own_table, *extra,
    ]


def tiled_stages(stages: str) -> list[str]:
    """The tiled stages (stage 8 on) among `stages`, for --avx2."""
    chosen = [s for s in select_stages(stages) if tiled(s)]
    if not chosen:
        raise UserError("--avx2: none of the chosen stages is a tiled stage (stage 8 on)")
    return chosen


def avx2_run(out: Path, stages: list[str], extra: list[str]) -> Path | None:
    """Run the benchmark again in a process whose numba compiles for an AVX2 CPU, on `stages` (no peers, no
    time to first answer); the path of its raw JSON, or None if it failed."""
    avx2_out = out / AVX2_DIR
    command = [sys.executable, "-m", "bench", "--out", str(avx2_out), "--stages", ",".join(stages), *extra,
               "--peers", "none", "--no-first-answer", "--photos", "0"]
    print(f"\nthe tiled stages again, compiled for AVX2 ({', '.join(f'{k}={v}' for k, v in AVX2_TARGET.items())})",
          file=sys.stderr)
    result = subprocess.run(command, env={**os.environ, **AVX2_TARGET})
    return avx2_out / RAW_JSON if result.returncode == 0 else None


def interleaved_run(out: Path, stages: str, blocks: int, passes: int, extra: list[str], busy: bool = False) -> bool:
    """bench.interleaved for the fastest stage of each precision among `stages` against the peers of that precision
    (float32 against float32, int8 against int8; only float32 if busy), with the threads and image that `extra`
    gives the rows (bench/conftest.py's options), into out, with --busy if busy; False if one failed. Nothing to
    do for a precision without a peer of its own, unless busy."""
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--peers", default=ALL)
    shared.add_argument("--threads")
    shared.add_argument("--image", default=str(DEFAULT_IMAGE))
    options, _ = shared.parse_known_args(extra)
    fastest = {precision(stage): stage for stage in select_stages(stages)}  # the last stage of each precision
    ok = True
    for kind, stage in sorted(fastest.items(), key=lambda item: item[0] != FLOAT32):
        peers = same_precision(stage, select_peers(options.peers))
        if (busy and kind != FLOAT32) or not (peers or busy):
            continue
        command = [sys.executable, "-m", "bench.interleaved", "--stage", stage, "--peers", ",".join(peers),
                   "--image", options.image, "--out", str(out), "--blocks", str(blocks), "--passes", str(passes)]
        command += ["--threads", options.threads] if options.threads else []
        command += ["--busy"] if busy else []
        print(f"\n{stage} against {', '.join(peers) or 'itself at 1 thread'}, taking turns in blocks"
              + (", one core kept busy" if busy else ""), file=sys.stderr)
        ok = subprocess.run(command).returncode == 0 and ok
    return ok


def accuracy_run(out: Path, stages: str, extra: list[str]) -> bool:
    """bench.accuracy for the reduced-precision stages chosen and the peers of their precisions, into out; False if it
    failed. Nothing to do without a reduced-precision stage."""
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--peers", default=ALL)
    shared.add_argument("--threads")
    options, _ = shared.parse_known_args(extra)
    reduced = [stage for stage in select_stages(stages) if precision(stage) != FLOAT32]
    if not reduced:
        return True
    rows = reduced + [peer for peer in select_peers(options.peers) if precision(peer) in map(precision, reduced)]
    command = [sys.executable, "-m", "bench.accuracy", "--rows", ",".join(rows), "--out", str(out)]
    command += ["--threads", options.threads] if options.threads else []
    print(f"\nwhat reduced precision costs in accuracy: {', '.join(rows)}", file=sys.stderr)
    return subprocess.run(command).returncode == 0


def kernels_run(out: Path, stages: str, extra: list[str]) -> bool:
    """bench.kernels for the stages chosen: each one's 1x1 conv kernels alone, against the peaks (kernels.json and
    kernels.png in out); False if it failed."""
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--threads")
    options, _ = shared.parse_known_args(extra)
    command = [sys.executable, "-m", "bench.kernels", "--stages", stages, "--out", str(out)]
    command += ["--threads", options.threads] if options.threads else []
    print("\neach stage's 1x1 conv kernels alone, against the peaks", file=sys.stderr)
    return subprocess.run(command).returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder (default: %(default)s)")
    parser.add_argument("--stages", default=ALL, help="stages to run: all, or numbers/names such as 3,4")
    parser.add_argument("--avx2", action="store_true",
                        help="also run the tiled stages compiled for an AVX2 CPU, reported beside the native build")
    parser.add_argument("--no-interleaved", action="store_true",
                        help="leave out the fastest stage's interleaved comparison with the peers")
    parser.add_argument("--blocks", type=positive_int, default=BLOCKS, help="rounds of the interleaved comparison")
    parser.add_argument("--passes", type=positive_int, default=PASSES, help="its timed passes per block and row")
    parser.add_argument("--busy", action="store_true",
                        help="only the interleaved comparison, with one core kept busy and the stage at 1 thread too")
    args, extra = parser.parse_known_args(argv)
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--peers", default=ALL)
    shared.add_argument("--image", default=str(DEFAULT_IMAGE))
    options, _ = shared.parse_known_args(extra)
    try:  # before anything in the results folder is deleted: a mistyped option must not cost the last run's files
        avx2_stages = tiled_stages(args.stages) if args.avx2 else []
        select_stages(args.stages)
        select_peers(options.peers)
        if not Path(options.image).is_file():
            raise UserError(f"{options.image}: no such file; give --image a photo that exists")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.busy:
        return int(not interleaved_run(out, args.stages, args.blocks, args.passes, extra, busy=True))
    for path in [out / RAW_JSON, *out.glob(INTERLEAVED_GLOB)]:  # never report an earlier run's figures as this one's
        path.unlink(missing_ok=True)
    code = pytest.main(pytest_args(out, ["--stages", args.stages, *extra]))
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        return int(code)
    compared = args.no_interleaved or interleaved_run(out, args.stages, args.blocks, args.passes, extra)
    measured = accuracy_run(out, args.stages, extra)
    plotted = kernels_run(out, args.stages, extra)
    avx2 = avx2_run(out, avx2_stages, extra) if avx2_stages else None
    # A failed row (say, a stage whose top-1 disagrees) is left out; the others are still reported.
    reported = report_main([str(out / RAW_JSON), "--out", str(out), *(["--avx2", str(avx2)] if avx2 else [])])
    return (int(code) or reported or int(bool(avx2_stages) and avx2 is None) or int(not compared) or int(not measured)
            or int(not plotted))


if __name__ == "__main__":
    sys.exit(main())
