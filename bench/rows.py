"""The rows of the benchmark: the stage folders (found the same way the tests find them) and the peers.

A row is built into a model with ``forward(image_hwc) -> logits`` and ``timings`` (set-up costs, seconds). Each
row computes in one precision (precision()): a peer says which, a stage's folder name ends in it (stage13_int8;
common.stages.precision) or it is float32. Where a stage is compared with the peers side by side
(bench/interleaved.py), only the peers of its own precision count (same_precision()): an int8 model beating a
float32 one is another question.
"""

from pathlib import Path

from bench.peers import PEER_CLASSES, PEERS
from common.errors import UserError
from common.paths import PICS_DIR
from common.stages import STAGES, find_stage, stage_module
from common.stages import precision as stage_precision

DEFAULT_IMAGE = PICS_DIR / "cat.png"  # the photo every row classifies
ALL = "all"
NONE = "none"


def select_stages(spec: str) -> list[str]:
    """'all', 'none', or a comma list of stage numbers or names ('3,4', 'stage3', 'stage3_preload')."""
    if spec == ALL:
        return list(STAGES)
    if spec == NONE:
        return []
    chosen = dict.fromkeys(find_stage(item) for item in filter(None, (part.strip() for part in spec.split(","))))
    return sorted(chosen, key=STAGES.index)


def select_peers(spec: str) -> list[str]:
    """'all', 'none', or a comma list of peer names."""
    if spec == ALL:
        return list(PEERS)
    if spec == NONE:
        return []
    chosen = [part.strip() for part in spec.split(",") if part.strip()]
    unknown = [p for p in chosen if p not in PEERS]
    if unknown:
        raise UserError(f"unknown peer {unknown[0]!r}; peers are: {', '.join(PEERS)} (or {ALL}, {NONE})")
    return sorted(set(chosen), key=PEERS.index)


def precision(row: str) -> str:
    """What a row computes in: "float32", "int8" or "bf16" (bench.peers' FLOAT32, INT8, BF16)."""
    return PEER_CLASSES[row].precision if row in PEER_CLASSES else stage_precision(row)


def same_precision(stage: str, peers: list[str]) -> list[str]:
    """The peers that compute in the stage's precision, in their order."""
    return [peer for peer in peers if precision(peer) == precision(stage)]


def check_stage(name: str) -> str:
    if name not in STAGES:
        raise UserError(f"no stage folder stages/{name}; stages are: {', '.join(STAGES)}")
    return name


def rounds_for(seconds_per_round: float, budget_s: float, low: int, high: int) -> int:
    """How many rounds fit into the time budget, within low..high."""
    wanted = int(budget_s / seconds_per_round) if seconds_per_round > 0 else high
    return max(low, min(high, wanted))


def build(row: str, weights_dir: Path, threads: int):
    """The model of one row. Stages take their thread count from numba (set once per process)."""
    if row in PEER_CLASSES:
        return PEER_CLASSES[row](weights_dir, threads)
    return stage_module(row).Model(weights_dir=weights_dir)
