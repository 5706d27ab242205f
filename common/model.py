"""A generated stage's model (stage 6 on): its weights prepared, its forward pass planned, written, compiled and run.

Stage 5 writes this out as its Model: the weights prepared once and mapped from the cache after
(common/prepared.py), the forward pass planned (`plan(arch, pool)`, a Plan: common/planner.py), its source written
into the kernel cache and compiled or loaded from it (common/codegen.py), and forward() writing the photo into the
plan's input, calling the generated forward(a) on the plan's arrays and returning its logits. Every generated stage
declares what its model is built from in one record, and from stage 6 on builds it with Compiled:

    PARTS = Parts(Path(__file__), PRELUDE, load_pool, plan)
    Model = partial(Compiled, PARTS)

A stage that tunes itself (stage 12 on) adds `tuning=Tuning(...)`: before its weights are prepared, the tuner
(common/tuning.py) plans the forward pass once per round of candidates on stand-in weights (`stand_in_plan`),
compiles the rounds' kernels and times their calls; the weights are then packed for the choices and the pass planned
with them: `load_pool(manifest, weights_dir, choices)`, `plan(arch, pool, choices)`. The pictures and the committed
example kernels (common/examples.py) plan from the same record.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.architecture import Conv, ResNet50, resnet50
from common.intrinsics import VECTOR_BITS
from common.paths import WEIGHTS_DIR
from common.planner import Plan, compiled, write
from common.prepared import prepared_pool
from common.tiles import first_of_each_shape, label, shape_name
from common.timing import timed
from common.tuning import prepared_for, tuned
from common.weights import load_manifest


@dataclass(frozen=True)
class Tuning:
    """What a tuned stage gives the tuner."""

    choice: type  # what the tuning picks for a layer shape: a NamedTuple, kept in the choice file as a list
    candidates: Callable[[Conv], list]  # the choices timed for a conv's shape, the untuned one first
    stand_in: Callable[[Conv, tuple], tuple]  # a conv's weights as fold packs them for a choice, of stand-in values
    stand_in_fc: Callable[[ResNet50], tuple]  # fc's, the same way
    header: str = ""  # what the command line's first line says before the tuning's result
    # The choice a conv's kernels are rendered with in the committed example (common/examples.py): its first
    # candidate by default.
    example: Callable[[Conv], tuple] | None = None


@dataclass(frozen=True)
class Parts:
    """What a generated stage's model is built from."""

    generator: Path  # the stage's model.py
    prelude: str  # what every generated kernel module starts with: its imports and the type names of its layouts
    load_pool: Callable  # (manifest, weights_dir[, choices]) -> the weights as the kernels read them
    plan: Callable  # (arch, pool[, choices]) -> Plan
    choice: str = ""  # what a tiled stage says it chose for this CPU on the command line's first line
    # The network the stage computes, from the weights' variant: ResNet-50 as written, or a stage's rewrite of it.
    architecture: Callable[[str], ResNet50] = resnet50
    tuning: Tuning | None = None  # a tuned stage's
    # What the plan reads beside the weights, measured on them but not kept with them (an int8 stage's activation
    # units, calibrated): (manifest, weights_dir) -> entries added to the pool.
    measure: Callable | None = None


def stand_in_plan(arch: ResNet50, plan: Callable, tuning: Tuning, choices: dict, stand_ins: dict,
                  measured: dict) -> Plan:
    """The forward pass planned with `choices` on stand-in weights, each conv's its own (as its real weights, they
    come from memory, not from the cache), kept in stand_ins by conv name and packing (the choice's block of output
    channels) for the next round."""
    pool = {}
    for conv in arch.convs:
        choice = choices[shape_name(conv)]
        key = (conv.name, choice.block)
        if key not in stand_ins:
            stand_ins[key] = tuning.stand_in(conv, choice)
        pool[conv.name] = stand_ins[key]
    if arch.fc.name not in stand_ins:
        stand_ins[arch.fc.name] = tuning.stand_in_fc(arch)
    pool["fc"] = stand_ins[arch.fc.name]
    return plan(arch, pool | measured, choices)


def tune(parts: Parts, arch: ResNet50, variant: str, measured: dict):
    """(choice by layer shape, what the header line says): from the choice file, or tuned now: the forward pass
    planned with each round's candidates on stand-in weights, every round's kernels compiled together, and their
    calls timed (common/tuning.py)."""
    generator, tuning = parts.generator, parts.tuning
    options = {shape: [list(c) for c in tuning.candidates(conv)]
               for shape, conv in first_of_each_shape(arch.convs).items()}
    stand_ins, kernels, tiled = {}, {}, {}  # shared by the rounds
    rounds = []

    def network(choices: dict[str, list]):
        planned = stand_in_plan(arch, parts.plan, tuning, {s: tuning.choice(*c) for s, c in choices.items()},
                                stand_ins, measured)
        kernels.update(planned.kernels)
        tiled.update(planned.tiled)
        rounds.append(planned)
        return planned.calls()

    def compile_trials():
        """Every round's kernels so far, compiled (in one process per core) or loaded from the kernel cache."""
        trials = Plan(kernels, [step for planned in rounds for step in planned.steps], tiled, rounds[0].image,
                      rounds[0].logits)
        return compiled(trials, write(trials, generator, parts.prelude, variant, "tuning"))[0]

    choices, how = tuned(generator, options, network, compile_trials, lambda c: label(tuning.choice(*c)))
    return {shape: tuning.choice(*choice) for shape, choice in choices.items()}, how


class Compiled:
    """ResNet-50 as a generated stage builds it from its Parts: weights prepared and (a tuned stage: after tuning) the
    forward pass planned when it is built, its source generated and compiled, one specialized kernel per distinct
    layer shape."""

    def __init__(self, parts: Parts, weights_dir: Path = WEIGHTS_DIR):
        self.manifest = load_manifest(weights_dir)
        self.arch = parts.architecture(self.manifest["variant"])
        variant, generator, tuning = self.manifest["variant"], parts.generator, parts.tuning
        self.timings = {}  # set-up costs in seconds
        measured = parts.measure(self.manifest, weights_dir) if parts.measure else {}
        choices = ()  # a tuned stage's choice by layer shape: what its weights are packed and its plan made for
        if tuning is None:
            self.choice = parts.choice
            # Computed once, then mapped from the cache (common/prepared.py).
            pool, self.timings["load weights"] = timed(
                prepared_pool, lambda: parts.load_pool(self.manifest, weights_dir), self.manifest, weights_dir,
                generator)
        else:
            # Its trial forward passes run on stand-in weights and buffers of their own.
            (tuned, how), self.timings["tune"] = timed(tune, parts, self.arch, variant, measured)
            choices = (tuned,)
            self.choice = f"{tuning.header}{how}, {VECTOR_BITS}-bit vectors"
            # Computed once, then mapped from the cache (common/prepared.py), again when the stage is tuned again.
            pool, self.timings["load weights"] = timed(
                prepared_for, tuned, lambda: parts.load_pool(self.manifest, weights_dir, tuned), self.manifest,
                weights_dir, generator)
        start = time.perf_counter()
        self.plan = parts.plan(self.arch, pool | measured, *choices)
        self.source_path = write(self.plan, generator, parts.prelude, variant)
        self.timings["codegen"] = time.perf_counter() - start
        # Compiled (the tile kernels with tile_vectorizer's settings), or loaded from the disk cache.
        self.kernels, how, seconds = compiled(self.plan, self.source_path)
        self.timings[how] = seconds
        self.arrays = self.plan.arrays  # a[i] of the generated forward(a)

    def forward(self, image: np.ndarray) -> np.ndarray:
        """image: HWC float32 (224, 224, 3) -> logits (1000,). The returned array is the model's own
        logits buffer: the next forward() overwrites it."""
        self.plan.image[...] = image
        self.kernels.forward(self.arrays)
        return self.plan.logits
