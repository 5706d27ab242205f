"""Show the vector instructions numba emitted for a stage's kernels.

    python -m common.asm STAGE [FUNCTION]      e.g. python -m common.asm stage2_simd conv2d

Runs one forward pass (so every kernel is compiled for the types it really gets), then prints, for each
compiled function of the stage's model module, how many packed fused multiply-add instructions
(vfmadd...ps on ymm/zmm registers: 8 or 16 float32 lanes per instruction) its machine code holds, and the
FMA lines of FUNCTION. Scalar code shows none: stage 1's conv2d multiplies and adds one float at a time.
"""

import argparse
import importlib
import re
import sys

import numpy as np
from numba.core.registry import CPUDispatcher

from common.architecture import IMAGE_SIZE

PACKED_FMA = re.compile(r"\bvf(?:n)?m(?:add|sub)\w*ps\b.*%(?:ymm|zmm)\d+")


def compiled_functions(module) -> dict[str, CPUDispatcher]:
    return {name: f for name, f in vars(module).items() if isinstance(f, CPUDispatcher) and f.signatures}


def packed_fma_lines(dispatcher: CPUDispatcher) -> list[str]:
    asm = "\n".join(dispatcher.inspect_asm(sig) for sig in dispatcher.signatures)
    return [line.strip() for line in asm.splitlines() if PACKED_FMA.search(line)]


def compile_stage(stage: str):
    """The stage's model module, after one forward pass on a blank image has compiled its kernels."""
    module = importlib.import_module(f"stages.{stage}.model")
    module.Model().forward(np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.float32))  # HWC
    return module


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.asm", description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", help="e.g. stage2_simd")
    parser.add_argument("function", nargs="?", default="conv2d")
    args = parser.parse_args(argv)
    module = compile_stage(args.stage)
    functions = compiled_functions(module)
    for name, dispatcher in functions.items():
        print(f"{name:<20} {len(packed_fma_lines(dispatcher)):>5} packed FMA instructions")
    if args.function not in functions:
        parser.error(f"{args.stage} has no compiled function {args.function!r}; it has: {', '.join(functions)}")
    print(f"\npacked FMA instructions in {args.function}:")
    print("\n".join(packed_fma_lines(functions[args.function])) or "(none)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
