"""Where the benchmark's results go, and the units its figures are in (milliseconds: common.timing.MS_PER_S): one place
for every bench module, the course's ladder and the README filler (bench/README.md describes each file).

The files of one `make bench` run, in RESULTS_DIR: pytest-benchmark's raw JSON, the table (latest.json, latest.md)
and its chart, the interleaved comparisons (interleaved.json for float32, interleaved-<precision>.json for the
others; busy.json with one core kept busy), the reduced precisions' accuracy, each stage's 1x1 conv kernels timed
alone (kernels.json and its chart) and the ladder's traced passes.
"""

from common.paths import REPO

RESULTS_DIR = REPO / "bench" / "results"
RAW_JSON = "raw.json"
LATEST_JSON, LATEST_MD, LATEST_PNG = "latest.json", "latest.md", "chart.png"
INTERLEAVED_JSON = "interleaved.json"  # the float32 comparison; a reduced-precision one: interleaved-int8.json
INTERLEAVED_GLOB = "interleaved*.json"
BUSY_JSON = "busy.json"
ACCURACY_JSON, ACCURACY_MD = "accuracy.json", "accuracy.md"
LADDER_JSON = "ladder.json"
KERNELS_JSON, KERNELS_PNG = "kernels.json", "kernels.png"  # bench.kernels: each stage's 1x1 conv kernels alone

FLOPS_PER_MAC = 2  # a multiply-add is two floating-point operations
GIGA = 1e9
PERCENT = 100.0
