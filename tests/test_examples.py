"""Every generated stage commits the kernels of one conv beside its model.py (common/examples.py): they must be what
the stage's generator writes today, so that what a reader opens is what runs."""

import pytest

from common.examples import EXAMPLE_CONV, EXAMPLE_FILE, EXAMPLE_VECTORS, GENERATED, example_source
from common.paths import REPO
from common.target import vector_registers


def test_every_generated_stage_commits_one():
    assert len(GENERATED) >= 11  # stages 5 to 15
    for stage in GENERATED:
        assert (REPO / "stages" / stage / EXAMPLE_FILE).is_file(), f"{stage}: no {EXAMPLE_FILE}"


@pytest.mark.skipif(vector_registers() != EXAMPLE_VECTORS,
                    reason=f"the committed kernels are rendered for {EXAMPLE_VECTORS[0]}-bit vectors x "
                           f"{EXAMPLE_VECTORS[1]}; numba compiles for others here")
@pytest.mark.parametrize("stage", GENERATED)
def test_committed_kernel_is_what_the_generator_writes(stage):
    committed = (REPO / "stages" / stage / EXAMPLE_FILE).read_text()
    assert committed == example_source(stage), (f"stages/{stage}/{EXAMPLE_FILE} is not the {EXAMPLE_CONV} kernel the "
                                                f"stage generates: `python -m common.examples {stage}` writes it again")
