"""Every stage against the PyTorch reference on every picture in pics/: the same top-5 classes in the
same order, every probability within PROB_TOLERANCE. The largest logit difference is reported."""

import numpy as np
import pytest

from common.labels import TOP_K, softmax
from common.stages import STAGES, stage_module
from tests.conftest import PICS

PROB_TOLERANCE = 1e-3


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
        top, ref_top = np.argsort(-probs)[:TOP_K], np.argsort(-ref_probs)[:TOP_K]
        assert list(top) == list(ref_top), f"{stage} on {path.name}: top-5 {top} != reference {ref_top}"
        assert np.abs(probs - ref_probs).max() <= PROB_TOLERANCE, f"{stage} on {path.name}"
        worst = max(worst, float(np.abs(logits - ref).max()))
    record_property("max_logit_diff", worst)
    print(f"\n{stage}: largest |logit - reference logit| over {len(PICS)} pictures: {worst:.2e}")
