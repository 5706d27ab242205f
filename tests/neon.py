"""The fastest stage's tile kernels as compiled for AArch64 (NEON's 32 registers of 128 bits), in a process of its own:
tests/test_portable_tiles.py runs `neon_loops` in a fresh interpreter, which this module, unlike the test module,
lets import nothing of the stages before the registers are NEON's."""

import importlib
import re
import sys
import tempfile
import types
from pathlib import Path

import llvmlite.binding as llvm
import numba

from common import codegen, target
from common.asm import hot_loop

NEON = (128, 32)  # bits per register, registers


def cross_compile(ir: str, triple: str, cpu: str) -> str:
    """Optimise numba's IR for another target as numba optimises for its own, and return that target's
    assembly. numba runs LLVM's O3 pipeline twice: a first round without the SLP vectorizer (to inline and
    simplify), then the full one; the loop vectorizer is off and the SLP vectorizer on, as tile_vectorizer asks."""
    machine = target.target_machine(triple, cpu, "")
    ir = re.sub(r"^target datalayout = .*$", f'target datalayout = "{machine.target_data}"', ir, flags=re.M)
    ir = re.sub(r"^target triple = .*$", f'target triple = "{triple}"', ir, flags=re.M)
    module = llvm.parse_assembly(ir)
    for slp in (False, True):
        options = llvm.create_pipeline_tuning_options(speed_level=3)
        options.loop_vectorization, options.slp_vectorization = False, slp
        builder = llvm.create_pass_builder(machine, options)
        builder.getModulePassManager().run(module, builder)
    return machine.emit_assembly(module)


def tile_kernels_only(path: Path, signatures: dict, settings) -> tuple:
    """common.codegen.load_module for the kernels that have a tile signature, the others left uncompiled."""
    kernels = {kernel: codegen.compile_kernel(module, kernel, signatures[kernel], settings)
               for module, kernel in codegen.kernel_modules(path).items() if kernel in signatures}
    return types.SimpleNamespace(**kernels), "compile", 0.0


def neon_loops(stage: str, cpus: dict[str, str]) -> dict:
    """{cpu: {kernel: inner-loop instructions}} for the tile kernels of `stage`, imported as if the CPU had NEON's
    registers and compiled without optimisation (numba's OPT=0), so that their IR is still target-neutral, then
    cross-compiled; in this process, without the disk cache, so that numba keeps their IR, and only the tile
    kernels, the ones checked (tile_kernels_only). Only in a fresh process, which this changes for good: in one that
    has compiled x86 code already, numba links x86-only helpers (an llvm.x86 atomic) into the IR, which the ARM back
    end cannot take, and the stages' tile is sized for the registers when common/intrinsics.py is first imported."""
    if "common.intrinsics" in sys.modules:
        raise RuntimeError("the vector registers were read before they could be NEON's: call this in a fresh process")
    with tempfile.TemporaryDirectory() as kernels, codegen.without_disk_cache():
        target.vector_registers = lambda: NEON  # read when common.intrinsics is imported, below
        codegen.KERNELS_DIR = Path(kernels)
        codegen.load_module = tile_kernels_only
        module = importlib.import_module(f"stages.{stage}.model")
        numba.config.OPT = 0  # after the imports, some of which read numba's optimisation level as numba sets it
        model = module.Model()
        irs = {kernel: getattr(model.kernels, kernel).inspect_llvm(signature)
               for kernel, signature in model.plan.tiled.items()}
    return {"choice": model.choice,
            "loops": {cpu: {kernel: hot_loop(cross_compile(ir, triple, cpu)) for kernel, ir in irs.items()}
                      for cpu, triple in cpus.items()}}


