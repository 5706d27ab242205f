"""Show the vector instructions numba emitted for a stage's kernels.

    python -m common.asm STAGE [FUNCTION]      e.g. python -m common.asm stage2_simd conv2d

Builds the stage and runs one forward pass (so every kernel is compiled for the types it really gets),
then prints, for each compiled function of the stage (its model module's, and from stage 5 on its
generated module's), how many packed fused multiply-add instructions (vfmadd...ps on ymm/zmm registers:
8 or 16 float32 lanes per instruction) its machine code holds, and the FMA lines of FUNCTION (a name, or
a part of one; default: the first conv kernel). Scalar code shows none: stage 1's conv2d multiplies and
adds one float at a time. With --loop it prints FUNCTION's inner loop instead (the basic block with the
most vector FMAs: in the tiled stages, one input channel's step of the register tile) and counts its
stack accesses: a tile whose sums do not fit the registers spills them there. numba keeps no machine code
for kernels it loads from its disk cache, so here every kernel is compiled afresh, with the stage's own
settings and for numba's target (NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES= shows an AVX2 build): about
20 s for the tiled stages.
"""

import argparse
import inspect
import pickletools
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from numba.core.registry import CPUDispatcher

from common.architecture import IMAGE_SIZE
from common.codegen import without_disk_cache
from common.stages import record, stage_module

# A packed multiply-add: a float32 FMA, the int8 stage's vpdpbusd (4 byte products per int32 lane, VNNI) or the
# bfloat16 stage's vdpbf16ps (2 bfloat16 products per float32 lane, AVX512_BF16).
PACKED_FMA = re.compile(r"\b(?:vf(?:n)?m(?:add|sub)\w*ps|vpdpbusd|vdpbf16ps)\b.*%(?:ymm|zmm)\d+")
# x86 (any width) or AArch64 NEON
VECTOR_FMA = re.compile(r"\bvf(?:n)?m(?:add|sub)\w*ps\b|\bvpdpbusd\b|\bvdpbf16ps\b|\bfmla\b")
VNNI_DOT = re.compile(r"\bvpdpbusd\b")
BF16_DOT = re.compile(r"\bvdpbf16ps\b")
LABEL = re.compile(r"^\s*[\w.$]+:")
BRANCH = re.compile(r"^\s*(j\w+|b(\.\w+)?|cbn?z|tbn?z)\s")  # x86 jumps, AArch64 branches: a block ends there
# An operand in the stack frame, where spilled registers go: x86 (%rsp), AArch64 [sp].
STACK_ACCESS = re.compile(r"\(%rsp\)|\[sp\b")
ELF_MAGIC = b"\x7fELF"
OBJDUMP_INSTRUCTION = re.compile(r"^\s*([0-9a-f]+):\s+(\S.*)$")  # "  1a4:  vfmadd231ps %zmm1,%zmm2,%zmm3"
OBJDUMP_JUMP = re.compile(r"^j\w+\s+([0-9a-f]+) <")  # "jne    1a0 <name+0x1a0>": the target's address


def compiled_functions(module) -> dict[str, CPUDispatcher]:
    return {name: f for name, f in vars(module).items() if isinstance(f, CPUDispatcher) and f.signatures}


def stage_functions(stage: str, model) -> dict[str, CPUDispatcher]:
    """The compiled functions of a built stage: its model module's and its generated module's (stage 5 on)."""
    modules = [stage_module(stage)]
    if record(stage).generates:
        modules.append(model.kernels)
    return {name: f for module in modules for name, f in compiled_functions(module).items()}


def packed_fma_lines(dispatcher: CPUDispatcher) -> list[str]:
    asm = "\n".join(dispatcher.inspect_asm(sig) for sig in dispatcher.signatures)
    return [line.strip() for line in asm.splitlines() if PACKED_FMA.search(line)]


def hot_loop(assembly: str, pattern: re.Pattern = VECTOR_FMA) -> list[str]:
    """The instructions of the basic block (from a label to the next label or branch) with the most vector FMAs, or
    the most instructions that `pattern` matches (VNNI_DOT, BF16_DOT: a reduced-precision kernel, whose output loop
    may have FMAs too)."""
    blocks, block = [], []
    for line in assembly.splitlines():
        if LABEL.match(line):
            blocks.append(block)
            block = []
        elif line.strip() and not line.strip().startswith((".", "#", ";", "//")):
            block.append(line.strip())
            if BRANCH.match(line):
                blocks.append(block)
                block = []
    blocks.append(block)
    return max(blocks, key=lambda b: sum(1 for line in b if pattern.search(line)))


def loop_counts(loop: list[str]) -> tuple[list[str], int, int]:
    """(a loop's instructions, its vector FMAs, its stack accesses)."""
    return (loop, sum(1 for line in loop if VECTOR_FMA.search(line)),
            sum(1 for line in loop if STACK_ACCESS.search(line)))


def loop_report(dispatcher: CPUDispatcher) -> tuple[list[str], int, int]:
    """loop_counts of the inner loop, over the function's signatures: the loop with the most FMAs of them."""
    loops = [hot_loop(dispatcher.inspect_asm(sig)) for sig in dispatcher.signatures]
    return loop_counts(max(loops, key=lambda b: sum(1 for line in b if VECTOR_FMA.search(line))))


def cached_assembly(dispatcher: CPUDispatcher) -> str:
    """The machine code of a kernel numba loaded from its disk cache, which keeps no assembly text: the object
    code in its cache files (read as pickle opcodes, never unpickled), disassembled by binutils' objdump, with a
    label line at every jump target, as in the assembly numba prints, so that hot_loop finds the blocks."""
    source = Path(inspect.getfile(dispatcher.py_func))
    files = sorted((source.parent / "__pycache__").glob(f"{source.stem}.{dispatcher.py_func.__name__}-*.nbc"))
    objects = [arg for f in files for _, arg, _ in pickletools.genops(f.read_bytes())
               if isinstance(arg, bytes) and arg.startswith(ELF_MAGIC)]
    if not objects:
        raise FileNotFoundError(f"no machine code of {dispatcher.py_func.__name__} in {source.parent / '__pycache__'}")
    lines = []
    with tempfile.TemporaryDirectory(prefix="resnet50-asm-") as folder:
        for number, code in enumerate(objects):
            path = Path(folder) / f"{number}.o"
            path.write_bytes(code)
            lines += subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(path)], capture_output=True,
                                    text=True, check=True).stdout.splitlines()
    instructions = [m.groups() for m in map(OBJDUMP_INSTRUCTION.match, lines) if m]
    targets = {m.group(1) for _, text in instructions for m in [OBJDUMP_JUMP.match(text)] if m}
    return "\n".join(f"{f'.L{address}:{chr(10)}' if address in targets else ''}    {text}"
                     for address, text in instructions)


def compile_stage(stage: str):
    """The stage's model, built without the disk cache, after one forward pass on a blank image."""
    with without_disk_cache():
        model = stage_module(stage).Model()
        model.forward(np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.float32))  # HWC
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.asm", description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", help="e.g. stage2_simd")
    parser.add_argument("function", nargs="?", default="conv", help="a function's name or part of it")
    parser.add_argument("--loop", action="store_true", help="print the function's inner loop and its stack accesses")
    args = parser.parse_args(argv)
    model = compile_stage(args.stage)
    functions = stage_functions(args.stage, model)
    width = max(map(len, functions))
    for name, dispatcher in functions.items():
        count = len(packed_fma_lines(dispatcher))
        print(f"{name:<{width}} {count:>5} packed FMA (or vpdpbusd, vdpbf16ps) instructions")
    chosen = functions.get(args.function) or next((f for n, f in functions.items() if args.function in n), None)
    if chosen is None:
        parser.error(f"{args.stage} has no compiled function {args.function!r}; it has: {', '.join(functions)}")
    choice = f" ({model.choice})" if record(args.stage).tiles else ""
    if args.loop:
        loop, fmas, stack = loop_report(chosen)
        print(f"\ninner loop of {chosen.py_func.__name__}{choice}: {len(loop)} instructions, {fmas} vector FMAs, "
              f"{stack} stack accesses")
        print("\n".join(loop))
        return 0
    print(f"\npacked FMA (or vpdpbusd) instructions in {chosen.py_func.__name__}{choice}:")
    print("\n".join(packed_fma_lines(chosen)) or "(none)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
