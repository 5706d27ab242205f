"""One picture per stage: the stage's conv loop nest, and a drawing of what its one idea changes.

    python -m course.pictures [STAGE ...]           # stages/<stage>/picture.png, every stage by default
    python -m course.pictures --out DIR --dpi 40 8  # stage 8's picture into DIR, at a low resolution

A picture has two parts. At the top, the loop nest of the stage's convolution (for stage 10 and 11 its
Winograd steps, for stages 16 and 17 the lines of the blocks they rewrite) as a few lines of pseudo-code, the lines
that changed from the stage it builds on highlighted (the one before it, or its record's predecessor).
Below, a drawing of what the idea changes: how memory is walked, the vector lanes, the weight pool, the
rotating buffers, the generated source, the split over threads, the fused passes, the register tile, the
tile order, Winograd's data flow, the tuning's candidate tiles and rounds, int8's vpdpbusd, byte layouts and
quantization, bfloat16's bits, rounding and vdpbf16ps, AMX's tiles, tdpbf16ps and the stem's row taps, the
pixels a downsampling block reads and what moving its stride up saves, in bfloat16 too.

Every number in a picture comes from the code it explains: from the stage's module (its constants, its functions,
its templates), from common/architecture.py (the shapes) and common/target.py (the vector registers of the CPU numba
compiles for: the tile of stages 8-11 is drawn as this CPU gets it; stage 12's candidates are drawn for two CPUs
named to LLVM, AVX-512 and AVX2, stage 13's vpdpbusd for one with AVX-512 VNNI, stage 14's vdpbf16ps for one with
AVX512_BF16, stage 15's tiles for one with AMX, planned and packed as there (no tile instruction runs: numpy does
them), stage 16's kernels as planned for AVX-512 and stage 17's for AVX512_BF16, so their pictures are the same on
every machine; nothing measured is drawn, as the tuning's choices differ from CPU to CPU, nor calibrated: stage 13's
units are stand-ins). Where a stage decides something layer by layer (which buffer a layer writes, which kernels are
generated, the tile order, the Winograd size), the stage's own planning code decides it: its plan runs on stand-in
weights of the real shapes (`planned`; stage 4's picture calls its plan itself), which hold nothing or, for a stage
that tunes, are those its tuning plans with, so no weights are read and nothing is compiled. Two pictures read real
numbers, as rounding is only seen on them: stage 14's, the stem's weights as `make weights` exports them by default
(v1) and one pixel of a photo of pics/, through the stage's fold, to_bf16 and plain_pairs (compiled by numba, which
takes a second); stage 15's, the stem's and layer1.0.conv2's weights and the same photo through its fold and the
statements of its generated AMX kernel, run with numpy's tiles (tests/amx_emulator.py).

A module draws a stage's picture, or a group's, with the helpers and constants only it uses: stages1_4.py,
stages5_7.py, stages8_9.py, stages10_11.py (Winograd), stage12.py (tuning), stage13.py (int8), stage14.py
(bfloat16), stage15.py (AMX), stage16.py (strides moved) and stage17.py (strides moved in bfloat16). shared.py
holds the sheet they draw on and what more than one of them uses.
"""

import argparse
from pathlib import Path

from common.errors import UserError, run_reporting_errors
from common.paths import REPO
from common.stages import STAGES, find_stage, stage_module, stage_number
from course.pictures.shared import DPI, Sheet, title
from course.pictures.stage12 import stage12
from course.pictures.stage13 import stage13
from course.pictures.stage14 import stage14
from course.pictures.stage15 import stage15
from course.pictures.stage16 import stage16
from course.pictures.stage17 import stage17
from course.pictures.stages1_4 import stage1, stage2, stage3, stage4
from course.pictures.stages5_7 import stage5, stage6, stage7
from course.pictures.stages8_9 import stage8, stage9
from course.pictures.stages10_11 import stage10, stage11

DRAWINGS = {1: stage1, 2: stage2, 3: stage3, 4: stage4, 5: stage5, 6: stage6, 7: stage7, 8: stage8, 9: stage9,
            10: stage10, 11: stage11, 12: stage12, 13: stage13, 14: stage14, 15: stage15,
            16: stage16, 17: stage17}


def draw(stage: str, directory: Path | None = None, dpi: int = DPI) -> Path:
    """Draw a stage's picture into directory (default: the stage's folder) as picture.png."""
    drawing = DRAWINGS.get(stage_number(stage))
    if drawing is None:
        raise UserError(f"no picture is defined for {stage}; add one to course/pictures/ and to its DRAWINGS")
    stage_module(stage)
    sheet = Sheet(title(stage))
    drawing(stage, sheet)
    return sheet.save((directory or REPO / "stages" / stage) / "picture.png", dpi)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course.pictures", description=__doc__.splitlines()[0])
    parser.add_argument("stages", nargs="*", metavar="STAGE", help="stage numbers or names (default: all)")
    parser.add_argument("--out", type=Path, help="folder to draw into (default: each stage's own folder)")
    parser.add_argument("--dpi", type=int, default=DPI)
    args = parser.parse_args(argv)

    def draw_all() -> int:
        for stage in [find_stage(s) for s in args.stages] or STAGES:
            print(draw(stage, args.out / stage if args.out else None, args.dpi))
        return 0

    return run_reporting_errors(draw_all)
