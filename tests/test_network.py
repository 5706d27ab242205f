"""Every stage against the PyTorch reference on every picture in pics/.

A float32 stage gives the same top-5 classes in the same order, every probability within PROB_TOLERANCE. A
reduced-precision stage rounds every weight and activation: stage13_int8 to one of 256 levels, stage14_bf16 to 8
significant bits. Its probabilities move, by up to about a quarter in int8 and about a hundredth in bfloat16
(their READMEs measure how far, on 50 and more photos), so 1e-3 would fail them where their answer is the same. It
gives the same top-1 class and at least TOP5_OVERLAP of the reference's top 5. The largest logit difference is
reported."""

import numpy as np
import pytest

from common.labels import TOP_K, softmax
from common.stages import STAGES, precision, stage_module
from tests.conftest import PICS

PROB_TOLERANCE = 1e-3
TOP5_OVERLAP = 4  # of the reference's top-5 classes, in a reduced-precision stage's top 5


def check_answer(stage: str, top: list[int], probs: list[float], ref_probs: np.ndarray, where: str) -> None:
    """A stage's top-5 class ids and their probabilities against the reference's probabilities, as its precision
    asks (the module's docstring)."""
    ref_top = list(np.argsort(-ref_probs)[:TOP_K])
    if precision(stage) == "float32":
        assert list(top) == ref_top, f"{stage} on {where}: top-5 {top} != reference {ref_top}"
        assert np.abs(np.asarray(probs) - ref_probs[list(top)]).max() <= PROB_TOLERANCE, f"{stage} on {where}"
    else:
        assert top[0] == ref_top[0], f"{stage} on {where}: top-1 {top[0]} != reference {ref_top[0]}"
        overlap = len(set(top) & set(ref_top))
        assert overlap >= TOP5_OVERLAP, f"{stage} on {where}: {overlap} of the reference's top 5 in its top 5"


@pytest.fixture(scope="module", params=STAGES)
def stage_model(request):
    return request.param, stage_module(request.param).Model()


@pytest.mark.slow
def test_stage_matches_reference(stage_model, images, reference_logits, record_property):
    stage, model = stage_model
    worst = 0.0
    for path in PICS:
        logits = model.forward(images[path])
        ref = reference_logits[path]
        assert logits.shape == ref.shape == (1000,)
        probs, ref_probs = softmax(logits), softmax(ref)
        top = list(np.argsort(-probs)[:TOP_K])
        check_answer(stage, top, list(probs[top]), ref_probs, path.name)
        if precision(stage) == "float32":  # every probability, not only the top 5's
            assert np.abs(probs - ref_probs).max() <= PROB_TOLERANCE, f"{stage} on {path.name}"
        worst = max(worst, float(np.abs(logits - ref).max()))
    record_property("max_logit_diff", worst)
    print(f"\n{stage}: largest |logit - reference logit| over {len(PICS)} pictures: {worst:.2e}")
