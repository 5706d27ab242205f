"""One conv's kernels as each generated stage writes them, committed beside its model.py, for readers and ruff to open.

A generated stage's kernels exist only in the kernel cache (common/codegen.py), under names that carry digests. So
that a reader can open one, and ruff check it, each stage from 5 on commits the kernels of one conv, EXAMPLE_CONV,
as a module of its own: the stage's prelude and the kernels' source, rendered by the stage's own plan, beside its
model.py as EXAMPLE_FILE. tests/test_examples.py fails when a committed file differs from what the generator writes
today; `python -m common.examples` writes them again.

layer1.0.conv2, a 3x3 conv of 64 channels on 56 x 56 pixels, has the same shape in both variants of the weights,
so the file does not depend on which the weights are. A tiled stage's kernels depend on the CPU they are generated
for: they are rendered for this CPU's vector registers, and the committed files for AVX-512 (32 registers of 512
bits; EXAMPLE_VECTORS), where the test checks them. A tuned stage's choice is its first candidate, or what its
Tuning names for the example (stage 15: its AMX tile, whether or not this CPU has AMX).

    python -m common.examples [STAGE ...]    # write the committed kernels again (every generated stage by default)
"""

import sys
import textwrap

from common.errors import run_reporting_errors
from common.model import Parts, stand_in_plan
from common.paths import REPO, WEIGHTS_DIR
from common.planner import Plan
from common.stages import STAGES, find_stage, record, stage_module
from common.tiles import shape_name
from common.weights import load_manifest

EXAMPLE_CONV = "layer1.0.conv2"
EXAMPLE_FILE = "layer1_0_conv2.py"
EXAMPLE_VECTORS = (512, 32)  # the vector registers the committed files are rendered for: AVX-512's
GENERATED = [stage for stage in STAGES if record(stage).generates]
DOCSTRING_WIDTH = 116  # the committed file's docstring, wrapped within ruff's line length


def example_plan(parts: Parts) -> Plan:
    """The stage's plan for the weights in weights/: of their real values, or, for a tuned stage, of stand-ins packed
    for the example's choices (the int8 stage's measured units are the real ones: they change no kernel's source)."""
    manifest = load_manifest(WEIGHTS_DIR)
    arch = parts.architecture(manifest["variant"])
    measured = parts.measure(manifest, WEIGHTS_DIR) if parts.measure else {}
    if parts.tuning is None:
        return parts.plan(arch, parts.load_pool(manifest, WEIGHTS_DIR))
    tuning = parts.tuning
    choose = tuning.example or (lambda conv: tuning.candidates(conv)[0])
    choices = {shape_name(conv): choose(conv) for conv in arch.convs}
    return stand_in_plan(arch, parts.plan, tuning, choices, {}, measured)


def example_source(stage: str) -> str:
    """The module EXAMPLE_FILE holds for the stage: a docstring, its prelude and the kernels of EXAMPLE_CONV."""
    parts = stage_module(stage).PARTS
    plan = example_plan(parts)
    kernels = dict.fromkeys(step.kernel for step in plan.of(EXAMPLE_CONV))
    text = (f"{EXAMPLE_CONV}'s kernels, {', '.join(kernels)}, as stages/{stage}/model.py generates them: rendered "
            f"by common/examples.py from the stage's plan, kept equal to what it writes by tests/test_examples.py. The "
            f"kernel cache holds the same source, one module per kernel, named after its digest.")
    header = '"""' + textwrap.fill(text, DOCSTRING_WIDTH) + '"""\n'
    return header + parts.prelude + "".join(plan.kernels[name] for name in kernels)


def write_examples(stages: list[str]) -> int:
    for stage in stages:
        path = REPO / "stages" / stage / EXAMPLE_FILE
        path.write_text(example_source(stage))
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(run_reporting_errors(lambda: write_examples([find_stage(s) for s in sys.argv[1:]] or GENERATED)))
