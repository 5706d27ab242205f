"""The tiled stages choose their register tile from the CPU numba compiles for (common/target.py), so that the
sums fit its vector registers: checked here without the hardware.

1. Every tiled stage, compiled for an AVX2-only CPU (NUMBA_CPU_NAME=haswell, no AVX-512 features: a
   learner's laptop), gives the reference answer on every picture.
2. The fastest stage's tile loops, compiled natively and for AVX2, keep their sums in registers: vector
   FMAs and no stack access in the loop (common.asm.loop_counts). The tiles are the ones the stage sizes for the
   registers, each shape's first candidate (the tuning may pick a bigger one on some CPU, whose register
   pressure is the tuning's to weigh: a 14-row bfloat16 stem spills a few sums on the AMD EPYC, and won its
   timing there). The machine code is read back from the kernel cache (common.asm.cached_assembly).
3. The same for AArch64 (Apple M1, Neoverse V1): the stage chooses its tile for NEON's 32 registers of 128
   bits, numba compiles the kernels without optimising them, and LLVM, from the llvmlite wheel, optimises
   and compiles their IR for the ARM target, with the stage's vectorizer settings.
"""

import json
import os
import re
import subprocess
import sys

import pytest

from common.asm import VECTOR_FMA
from common.labels import softmax
from common.paths import PICS_DIR, REPO
from common.stages import FASTEST, STAGES, precision, stage_module, tiled
from common.target import AVX2_TARGET
from tests.conftest import PICS
from tests.test_cli_errors import RUN_TIMEOUT_S
from tests.test_network import check_answer

TILED = [s for s in STAGES if tiled(s)]
# The reduced-precision stages' dot product: its instruction, the asm pattern that finds it, the attribute that says
# whether this CPU has it, and what the header line says of a build without it.
DOTS = {"int8": ("vpdpbusd", "VNNI_DOT", "HAS_VNNI", "no VNNI on this CPU"),
        "bf16": ("vdpbf16ps", "BF16_DOT", "HAS_BF16", "no AVX512_BF16 on this CPU")}
REDUCED = {precision(s): s for s in reversed(STAGES) if precision(s) in DOTS}  # the first of each precision
BUILDS = {"native": {}, "avx2": AVX2_TARGET}
# What each build's vector FMAs work on: AVX2 has no zmm registers.
REGISTER = {"native": re.compile(r"%[yz]mm"), "avx2": re.compile(r"%ymm")}
VECTOR_REGISTER = re.compile(r"%[xyz]mm")
ARM_TARGETS = {"apple-m1": "arm64-apple-macosx", "neoverse-v1": "aarch64-unknown-linux-gnu"}
# The stage's tile kernels with each shape's first candidate tile (the tile it is sized for: a tuned stage's round 0,
# whatever the tuning then picks on this CPU), from the kernel cache, compiled first if it lacks them: their inner
# loops.
LOOPS_SCRIPT = """
import json
from common.asm import BF16_DOT, VECTOR_FMA, VNNI_DOT, cached_assembly, hot_loop, loop_counts
from common.examples import example_plan
from common.planner import compiled, write
from common.stages import stage_module
from common.weights import load_manifest
parts = stage_module({stage!r}).PARTS
plan = example_plan(parts)
kernels = compiled(plan, write(plan, parts.generator, parts.prelude, load_manifest()["variant"], "untuned"))[0]
report = {{name: loop_counts(hot_loop(cached_assembly(getattr(kernels, name)), {pattern})) for name in plan.tiled}}
print(json.dumps({{"choice": "each shape's first candidate tile", "loops": report}}))
"""


def run_python(args: list[str], env: dict, cache=None) -> subprocess.CompletedProcess:
    """python args, in the user's kernel cache (the one the test run's workers share) or in `cache`."""
    folder = {} if cache is None else {"RESNET_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          env={**os.environ, **folder, **env})


@pytest.mark.slow
@pytest.mark.parametrize("stage", TILED)
def test_avx2_build_matches_reference(stage, reference_logits):
    result = run_python(["-m", f"stages.{stage}", str(PICS_DIR), "--json", "--warmup", "0"], AVX2_TARGET)
    assert result.returncode == 0, result.stderr
    assert "256-bit vectors" in result.stderr, result.stderr  # the header line names the build's choice
    if precision(stage) in DOTS:  # and, for a reduced-precision stage, that Haswell lacks its dot product
        assert DOTS[precision(stage)][3] in result.stderr, result.stderr
    answers = {line["image"]: line["top5"] for line in map(json.loads, result.stdout.splitlines())}
    assert len(answers) == len(PICS)
    for path in PICS:
        top5 = answers[str(path)]
        check_answer(stage, [t["class_id"] for t in top5], [t["prob"] for t in top5],
                     softmax(reference_logits[path]), f"{path.name}, AVX2 build")


@pytest.mark.slow
@pytest.mark.parametrize("build", BUILDS)
def test_x86_tile_loops_keep_sums_in_registers(build):
    result = run_python(["-c", LOOPS_SCRIPT.format(stage=FASTEST, pattern="VECTOR_FMA")], BUILDS[build])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["loops"], "no tile kernels"
    for name, (loop, fmas, stack) in report["loops"].items():
        assert fmas > 0, f"{name} ({report['choice']}): no vector FMA in its inner loop:\n" + "\n".join(loop)
        assert all(REGISTER[build].search(line) for line in loop if VECTOR_FMA.search(line)), "\n".join(loop)
        assert stack == 0, f"{name} ({report['choice']}) spills in its inner loop:\n" + "\n".join(loop)


def has_dot(kind: str) -> bool:
    return kind in REDUCED and getattr(stage_module(REDUCED[kind]), DOTS[kind][2])


@pytest.mark.slow
@pytest.mark.parametrize("kind", [pytest.param(kind, marks=pytest.mark.skipif(
    not has_dot(kind), reason=f"no {kind} stage, or this CPU lacks {DOTS[kind][0]}")) for kind in DOTS])
def test_reduced_precision_tile_loops_keep_sums_in_registers(kind):
    """A reduced-precision stage's sums live in a stack array that its dot product's intrinsic (vpdpbusd,
    vdpbf16ps) loads and stores: LLVM must turn them into registers (SROA), or every instruction would go through
    memory. No vector register goes to the stack in the inner loop (a 14-row tile's 14 row addresses may: 2 of them
    are reloaded from it, measured)."""
    instruction, pattern = DOTS[kind][:2]
    result = run_python(["-c", LOOPS_SCRIPT.format(stage=REDUCED[kind], pattern=pattern)], {})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["loops"], "no tile kernels"
    for name, (loop, dots, _) in report["loops"].items():
        assert dots > 0 and all(instruction in line for line in loop if VECTOR_FMA.search(line)), "\n".join(loop)
        spills = [line for line in loop if "(%rsp)" in line and VECTOR_REGISTER.search(line)]
        assert not spills, f"{name} ({report['choice']}) spills sums in its inner loop:\n" + "\n".join(loop)


@pytest.fixture(scope="module")
def neon(tmp_path_factory):
    script = (f"import json; from tests.neon import neon_loops; print(json.dumps(neon_loops({FASTEST!r}, "
              f"{ARM_TARGETS!r})))")
    result = run_python(["-c", script], {}, tmp_path_factory.mktemp("cache"))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("cpu", ARM_TARGETS)
def test_aarch64_tile_loops_keep_sums_in_registers(cpu, neon):
    assert neon["choice"].endswith("128-bit vectors")
    assert neon["loops"][cpu], "no tile kernels"
    for name, loop in neon["loops"][cpu].items():
        fmas = [line for line in loop if VECTOR_FMA.search(line)]
        assert fmas and all(".4s" in line for line in fmas), f"{name} on {cpu}: no NEON FMA:\n" + "\n".join(loop)
        assert not [line for line in loop if "[sp" in line], f"{name} on {cpu} spills:\n" + "\n".join(loop)
