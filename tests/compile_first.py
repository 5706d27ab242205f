"""`make test`'s first step (pytest --compile-first, tests/conftest.py): the kernels of every build the tests run,
compiled before the tests start, one build after another and each on every core (common.codegen compiles a
stage's kernels in one process per core). So no two of the suite's workers compile the same kernels, nothing
waits on one core while the other idles, and a long wait shows, a line per build. With a filled kernel cache
every build is loaded, about 0.5 s each.

    python -m tests.compile_first native V15_WEIGHTS   every stage that generates kernels, v1 and v1.5 weights
    python -m tests.compile_first avx2                 the tiled stages for an AVX2-only CPU (common.target.AVX2_TARGET)
"""

import sys
import time
from pathlib import Path

from common.paths import WEIGHTS_DIR
from common.stages import STAGES, generated, stage_module, tiled


def builds(target: str, v15_weights: Path | None) -> list[tuple[str, Path]]:
    if target == "avx2":
        return [(stage, WEIGHTS_DIR) for stage in STAGES if tiled(stage)]
    return [(stage, weights) for weights in (WEIGHTS_DIR, v15_weights) for stage in STAGES if generated(stage)]


def main(argv: list[str]) -> int:
    target, *rest = argv
    for stage, weights in builds(target, Path(rest[0]) if rest else None):
        start = time.perf_counter()
        model = stage_module(stage).Model(weights)
        how = "compiled" if "compile" in model.timings else "loaded"
        print(f"kernels of {stage}, {model.manifest['variant']} weights, {target} build: {how} in "
              f"{time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
