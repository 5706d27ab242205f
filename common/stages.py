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
