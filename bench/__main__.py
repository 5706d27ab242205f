"""`make bench`: run bench/test_latency.py and bench/test_end_to_end.py under pytest-benchmark, then write the report.

    python -m bench [--out DIR] [--stages 3,4] [--peers all|none|pytorch,...] [--threads N] [--seconds S]
                    [--min-rounds N] [--max-rounds N] [--image PATH] [--photos N]
                    [any pytest or pytest-benchmark option]

Every run is also saved under DIR/history/ (pytest-benchmark's storage), so that a later run can be compared
with it: `python -m bench --benchmark-compare` compares with the last saved run, `--benchmark-compare=0003`
with run 0003. bench/README.md explains the options and the columns.
"""

import argparse
import sys
from pathlib import Path

import pytest

from bench.report import RAW_JSON, RESULTS_DIR
from bench.report import main as report_main

# Forward-only rows first, then the fastest stage end to end, which is compared with its forward-only row.
BENCH_MODULES = [Path(__file__).resolve().parent / name for name in ("test_latency.py", "test_end_to_end.py")]
HISTORY = "history"


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder (default: %(default)s)")
    args, extra = parser.parse_known_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / RAW_JSON).unlink(missing_ok=True)  # never report an earlier run's figures as this one's
    code = pytest.main(pytest_args(out, extra))
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        return int(code)
    # A failed row (say, a stage whose top-1 disagrees) is left out; the others are still reported.
    reported = report_main([str(out / RAW_JSON), "--out", str(out)])
    return int(code) or reported


if __name__ == "__main__":
    sys.exit(main())
