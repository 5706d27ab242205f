"""The stages that exist: every folder stages/stageN_idea with a model.py, in order, and the precision each computes in.

The stages after the fastest float32 one compute in reduced precision (stage13_int8): their answers differ a
little from the reference's, so `make run`, `make explain` and the float32 comparisons take FASTEST, the last
float32 stage, not the last stage.
"""

import importlib

from common.errors import UserError
from common.paths import REPO


def stage_number(stage: str) -> int:
    return int(stage.removeprefix("stage").split("_")[0])


STAGES = sorted((p.name for p in (REPO / "stages").glob("stage[0-9]*_*") if (p / "model.py").is_file()),
                key=stage_number)
PRECISIONS = ("int8", "bf16")  # a reduced-precision stage's folder name ends in one; every other stage: float32


def precision(stage: str) -> str:
    """What the stage computes in: "float32", or its folder name's last part ("int8", "bf16")."""
    last = stage.rsplit("_", 1)[-1]
    return last if last in PRECISIONS else "float32"


FLOAT32_STAGES = [stage for stage in STAGES if precision(stage) == "float32"]
FASTEST = FLOAT32_STAGES[-1]  # the last float32 stage: what make run and make explain run


def stage_module(stage: str):
    """The stage's model module (its Model class and kernels)."""
    return importlib.import_module(f"stages.{stage}.model")


def find_stage(spec: str) -> str:
    """The stage folder a user means by a number or a name: '3', 'stage3' or 'stage3_preload'."""
    prefix = (spec if spec.startswith("stage") else f"stage{spec}").split("_")[0] + "_"
    match = next((s for s in STAGES if s == spec or s.startswith(prefix)), None)
    if match is None:
        raise UserError(f"no stage {spec!r} in stages/; stages are: {', '.join(STAGES)}")
    return match


def threaded(stage: str) -> bool:
    """Does the stage run parallel loops (stage 6 on), so that its command line takes --threads?"""
    return "threads=True" in (REPO / "stages" / stage / "__main__.py").read_text()


def generated(stage: str) -> bool:
    """Does the stage generate its kernels and keep them in the kernel cache (stage 5 on)?"""
    return hasattr(stage_module(stage).Model, "write_source")


def tiled(stage: str) -> bool:
    """Does the stage choose a register tile for the CPU it is compiled for (stage 8 on)?"""
    return hasattr(stage_module(stage), "TILE_CHOICE")
