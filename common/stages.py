"""The stages that exist, and what each one is: the record its package declares, `STAGE = Stage(__name__, ...)`.

A stage is a folder stages/stageN_idea with a model.py; its __init__.py says, in one Stage record, what it computes
in, whether it runs threads, generates its kernels, chooses a register tile for the CPU and tunes itself, which peak
its speed is measured against and, where it does not build on the stage numbered before it, which one it builds on.
The command line, the tests, the benchmark and the pictures read the record; nothing looks into a stage's source.

The reduced-precision stages' answers differ a little from the reference's, so `make run` and the float32
comparisons take FASTEST, the last float32 stage, not the last stage; `make explain`, which draws every layer's
output, takes EXPLAINED, the last float32 stage that computes them all.

    python -m common.stages fastest          # the folder of FASTEST (the Makefile's default stage)
    python -m common.stages explained        # the folder of EXPLAINED (make explain's default stage)
    python -m common.stages precision STAGE  # what STAGE computes in
"""

import importlib
import sys

from common.errors import UserError
from common.paths import REPO
from stages import FLOAT32, Stage, stage_number

STAGES = sorted((p.name for p in (REPO / "stages").glob("stage[0-9]*_*") if (p / "model.py").is_file()),
                key=stage_number)


def record(stage: str) -> Stage:
    """The Stage record the stage's package declares."""
    declared = importlib.import_module(f"stages.{stage}").STAGE
    if declared.name != stage:  # a package copied from another stage, say
        raise UserError(f"stages/{stage}/__init__.py declares the record of {declared.name}")
    return declared


def precision(stage: str) -> str:
    """What the stage computes in: "float32", "int8" or "bf16"."""
    return record(stage).precision


FLOAT32_STAGES = [stage for stage in STAGES if precision(stage) == FLOAT32]
FASTEST = FLOAT32_STAGES[-1]  # the last float32 stage: what make run runs
# The last float32 stage that computes every layer's whole output, as the network is written (a stage that rewrites
# it computes some only in part): what make explain shows.
EXPLAINED = [stage for stage in FLOAT32_STAGES if not record(stage).rewrites][-1]


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
    return record(stage).threads


def generated(stage: str) -> bool:
    return record(stage).generates


def tiled(stage: str) -> bool:
    return record(stage).tiles


if __name__ == "__main__":
    question, *stage = sys.argv[1:]
    print({"fastest": FASTEST, "explained": EXPLAINED}.get(question) or precision(find_stage(stage[0])))
