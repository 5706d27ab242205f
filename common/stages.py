"""The stages that exist: every folder stages/stageN_idea with a model.py, in order."""

import importlib

from common.paths import REPO


def stage_number(stage: str) -> int:
    return int(stage.removeprefix("stage").split("_")[0])


STAGES = sorted((p.name for p in (REPO / "stages").glob("stage[0-9]*_*") if (p / "model.py").is_file()),
                key=stage_number)


def stage_module(stage: str):
    """The stage's model module (its Model class and kernels)."""
    return importlib.import_module(f"stages.{stage}.model")


def threaded(stage: str) -> bool:
    """Does the stage run parallel loops (stage 6 on), so that its command line takes --threads?"""
    return "threads=True" in (REPO / "stages" / stage / "__main__.py").read_text()


def tiled(stage: str) -> bool:
    """Does the stage choose a register tile for the CPU it is compiled for (stage 8 on)?"""
    return hasattr(stage_module(stage), "TILE_CHOICE")
