"""The vector registers of the CPU that numba compiles for: how wide they are and how many there are.

The tiled stages size their register tile from this (a tile of sums must fit the register file, or the
compiler spills it to memory). It is asked of LLVM itself, for the target numba uses: its CPU name and
features, NUMBA_CPU_NAME / NUMBA_CPU_FEATURES included (`NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES=` stands
in for an AVX2 laptop). A fused multiply-add on 16 floats is compiled for the target, asking for vectors
that wide, and the register names in the instructions LLVM emits tell the width: zmm is 512 bits
(AVX-512, 32 registers), ymm 256 (AVX2, 16 registers), xmm 128 (16 registers), and AArch64's v registers
128 (NEON, 32 registers).
"""

import re
from functools import cache

import llvmlite.binding as llvm
from numba.core.registry import cpu_target

# The environment that makes numba compile for an AVX2 CPU without AVX-512 (a learner's laptop), on any x86 machine.
AVX2_TARGET = {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": ""}
PROBE_LANES = 16
PROBE_IR = f"""
define void @probe(ptr %p) #0 {{
  %a = load <{PROBE_LANES} x float>, ptr %p
  %r = call <{PROBE_LANES} x float> @llvm.fma.v{PROBE_LANES}f32(<{PROBE_LANES} x float> %a, <{PROBE_LANES} x float> %a,
                                                <{PROBE_LANES} x float> %a)
  store <{PROBE_LANES} x float> %r, ptr %p
  ret void
}}
declare <{PROBE_LANES} x float> @llvm.fma.v{PROBE_LANES}f32(<{PROBE_LANES} x float>, <{PROBE_LANES} x float>,
                                              <{PROBE_LANES} x float>)
attributes #0 = {{ "prefer-vector-width"="512" "min-legal-vector-width"="512" }}
"""
# Register name in a vector FMA instruction -> (bits, registers in the file).
REGISTER_FILES = (
    (re.compile(r"\bvfmadd\w*ps\b.*%zmm"), 512, 32),
    (re.compile(r"\bvfmadd\w*ps\b.*%ymm"), 256, 16),
    (re.compile(r"\bvfmadd\w*ps\b.*%xmm"), 128, 16),
    (re.compile(r"\bfmla(\.4s)?\s"), 128, 32),
)
NO_FMA = (128, 16)  # an x86-64 CPU without FMA: SSE's 16 xmm registers, multiply and add apart


def numba_target() -> tuple[str, str, str]:
    """(triple, CPU name, CPU features) as numba compiles, overrides included."""
    return cpu_target.target_context.codegen().magic_tuple()


def target_machine(triple: str, cpu: str, features: str):
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    return llvm.Target.from_triple(triple).create_target_machine(cpu=cpu, features=features, opt=2)


@cache
def vector_registers(triple: str | None = None, cpu: str = "", features: str = "") -> tuple[int, int]:
    """(bits per vector register, number of vector registers) of a target; numba's target by default."""
    if triple is None:
        triple, cpu, features = numba_target()
    module = llvm.parse_assembly(PROBE_IR)
    module.triple = triple
    assembly = target_machine(triple, cpu, features).emit_assembly(module)
    for pattern, bits, registers in REGISTER_FILES:
        if pattern.search(assembly):
            return bits, registers
    return NO_FMA


def target_features() -> set[str]:
    """The features numba's target CPU has, as LLVM names them ("avx512vnni", "avxvnni", "avx512bf16", ...): those its
    feature string turns on. An override of the CPU name without a feature string (NUMBA_CPU_NAME=haswell
    NUMBA_CPU_FEATURES=) gives none: a stage then takes its plain fallback, which is correct on every CPU."""
    return {feature[1:] for feature in numba_target()[2].split(",") if feature.startswith("+")}
