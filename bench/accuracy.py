"""What reduced precision costs in accuracy: each reduced-precision row's answers against the fastest float32 stage's.

The rows are, by default, the reduced-precision stages (stage13_int8) and peers (bench/peers.py: OpenVINO's and ONNX
Runtime's int8 models, quantized on the same calibration photos, and OpenVINO in bfloat16); `make bench` takes
those of its stages' precisions. The inputs are
common.photos.evaluation_photos(): pics/ and the package photos kept out of calibration, with crops, flips and
rescales of them, none of them a photo any row was calibrated on. Per row:

- top-1 agreement: the share of inputs whose most likely class is the float32 stage's;
- top-5 overlap: how many of the float32 stage's 5 most likely classes are among the row's 5, on average and at
  the least;
- the largest change of the float32 top-1 class's probability;
- the logits' relative error, |z - z_float32| / |z_float32| (Euclidean lengths over the 1000 logits), median and
  largest.

The figures go to bench/results/accuracy.json and accuracy.md; the reduced-precision stages' READMEs quote them
(bench/readme.py's `accuracy` markers).

    python -m bench.accuracy [--rows stage13_int8,openvino-int8] [--threads N]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from bench.paths import ACCURACY_JSON, ACCURACY_MD, RESULTS_DIR
from bench.peers import PEERS
from bench.rows import build, precision
from common.cli import positive_int, set_threads
from common.errors import UserError, run_reporting_errors, say
from common.labels import TOP_K, softmax
from common.paths import WEIGHTS_DIR
from common.stages import FASTEST, STAGES
from common.weights import load_manifest
from stages import PRECISIONS

DEFAULT_THREADS = 2


def reduced_rows() -> list[str]:
    return [row for row in STAGES + list(PEERS) if precision(row) in PRECISIONS]


def compare(logits: np.ndarray, base: np.ndarray) -> dict:
    """One input's figures: the row's logits against the float32 stage's."""
    probs, base_probs = softmax(logits), softmax(base)
    top, base_top = np.argsort(-probs)[:TOP_K], np.argsort(-base_probs)[:TOP_K]
    return {"same_top1": bool(top[0] == base_top[0]), "top5_overlap": len(set(top) & set(base_top)),
            "top1_prob_change": float(abs(probs[base_top[0]] - base_probs[base_top[0]])),
            "logits_rel_error": float(np.linalg.norm(logits - base) / np.linalg.norm(base))}


def summary(per_input: list[dict]) -> dict:
    errors = [one["logits_rel_error"] for one in per_input]
    overlaps = [one["top5_overlap"] for one in per_input]
    return {"inputs": len(per_input),
            "top1_agreement": sum(one["same_top1"] for one in per_input) / len(per_input),
            "top5_overlap_mean": float(np.mean(overlaps)), "top5_overlap_min": min(overlaps),
            "top1_prob_change_max": max(one["top1_prob_change"] for one in per_input),
            "logits_rel_error_median": float(np.median(errors)), "logits_rel_error_max": max(errors)}


def markdown(result: dict) -> str:
    lines = [f"Against {result['baseline']} on {result['inputs']} inputs (common.photos.evaluation_photos), "
             f"{result['machine']}, {result['date']}:", "",
             "| row | precision | top-1 agreement | top-5 overlap, mean (least) | largest top-1 probability change "
             "| logits' relative error, median (largest) |", "|---|---|---:|---:|---:|---:|"]
    for row, figures in result["rows"].items():
        lines.append(f"| {row} | {figures['precision']} | {figures['top1_agreement']:.1%} | "
                     f"{figures['top5_overlap_mean']:.2f} ({figures['top5_overlap_min']}) | "
                     f"{figures['top1_prob_change_max']:.3f} | {figures['logits_rel_error_median']:.3f} "
                     f"({figures['logits_rel_error_max']:.3f}) |")
    disagree = {row: figures["disagreements"] for row, figures in result["rows"].items() if figures["disagreements"]}
    if disagree:
        lines += ["", "Inputs whose top-1 differs from float32's: " + "; ".join(
            f"{row}: {', '.join(names)}" for row, names in disagree.items()) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", help=f"comma list (default: {', '.join(reduced_rows())})")
    parser.add_argument("--threads", type=positive_int, default=DEFAULT_THREADS)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help=f"folder for {ACCURACY_JSON} and {ACCURACY_MD}")
    args = parser.parse_args(argv)
    rows = args.rows.split(",") if args.rows else reduced_rows()
    unknown = [row for row in rows if row not in STAGES and row not in PEERS]
    if unknown:
        raise UserError(f"unknown row {unknown[0]!r}; rows are the stages and the peers: "
                        f"{', '.join(STAGES + list(PEERS))}")
    set_threads(args.threads)
    import cpuinfo

    from common.photos import evaluation_photos

    inputs = evaluation_photos(load_manifest(WEIGHTS_DIR)["preprocessing"])
    say(f"{FASTEST} (float32) on {len(inputs)} inputs ...")
    baseline = build(FASTEST, WEIGHTS_DIR, args.threads)
    base = {name: baseline.forward(image).copy() for name, image in inputs}
    result = {"baseline": FASTEST, "inputs": len(inputs), "machine": cpuinfo.get_cpu_info().get("brand_raw", "unknown"),
              "date": time.strftime("%Y-%m-%d"), "rows": {}}
    for row in rows:
        say(f"{row} on {len(inputs)} inputs ...")
        model = build(row, WEIGHTS_DIR, args.threads)
        per_input = {name: compare(np.asarray(model.forward(image), np.float32).copy(), base[name])
                     for name, image in inputs}
        result["rows"][row] = {"precision": precision(row),
                               **summary(list(per_input.values())),
                               "disagreements": [name for name, one in per_input.items() if not one["same_top1"]]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / ACCURACY_JSON).write_text(json.dumps(result, indent=1) + "\n")
    (args.out / ACCURACY_MD).write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
