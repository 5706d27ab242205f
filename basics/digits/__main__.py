"""Train the digit CNN, report its test accuracy, save the confusion matrix, then check stage 1's
hand-written ops against torch on every test image:

    python -m basics.digits [-o DIR] [--dataset digits|mnist] [--epochs N] [--seed N]

Exit code 1 if the accuracy misses TARGET_ACCURACY or the hand-written inference disagrees with torch.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from basics.digits import by_hand, data, net
from basics.figures import confusion_figure
from common.cli import positive_int
from common.errors import EXIT_FAILED, run_reporting_errors

OUT_DIR = Path("out/digits")
EPOCHS = {"digits": 30, "mnist": 3}  # by the dataset actually used: MNIST has 40 times more images
TARGET_ACCURACY = 0.97
LOGIT_TOLERANCE = 1e-4  # float32 sums in another order differ in the last bits, not more
SEED = 0
DESCRIPTION = ("Train a small CNN on handwritten digits, report its test accuracy and confusion matrix, then run "
               "it with stage 1's hand-written ops and check them against torch.")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m basics.digits", description=DESCRIPTION)
    parser.add_argument("-o", "--out", type=Path, default=OUT_DIR, help="output folder (default: %(default)s)")
    parser.add_argument("--dataset", choices=data.DATASETS, default="digits",
                        help="digits: scikit-learn's 8x8, offline; mnist: downloaded by torchvision, "
                             "falling back to digits (default: %(default)s)")
    parser.add_argument("--epochs", type=positive_int, metavar="N",
                        help=f"training passes (default: {EPOCHS['digits']} for the 8x8 digits, "
                             f"{EPOCHS['mnist']} for MNIST)")
    parser.add_argument("--seed", type=int, default=SEED, help="initialization and batch order (default: %(default)s)")
    return parser.parse_args(argv)


def compare(hand: np.ndarray, reference: np.ndarray) -> tuple[int, float]:
    """(images on which both predict the same digit, largest |logit difference|)"""
    same = int(np.sum(hand.argmax(axis=1) == reference.argmax(axis=1)))
    return same, float(np.abs(hand - reference).max())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_reporting_errors(lambda: run(args))


def run(args: argparse.Namespace) -> int:
    from sklearn.metrics import confusion_matrix

    dataset, note = data.load(args.dataset)
    if note:
        print(f"note: {note}")
    epochs = args.epochs or EPOCHS[dataset.key]
    print(f"{dataset.name}: {len(dataset.train_labels)} training and {len(dataset.test_labels)} test images, "
          f"{dataset.image_size}x{dataset.image_size}; {epochs} epochs on the CPU")
    start = time.perf_counter()
    model = net.train(dataset, epochs, args.seed,
                      report=lambda e: print(f"  epoch {e.number:>3}: loss {e.loss:.4f} ({e.seconds:.2f} s)"))
    print(f"trained in {time.perf_counter() - start:.1f} s")

    reference = net.logits(model, dataset.test_images)
    predicted = reference.argmax(axis=1)
    accuracy = float(np.mean(predicted == dataset.test_labels))
    print(f"test accuracy (torch): {accuracy:.2%} ({int(np.sum(predicted == dataset.test_labels))}"
          f"/{len(predicted)}), target {TARGET_ACCURACY:.0%}")
    path = confusion_figure(confusion_matrix(dataset.test_labels, predicted),
                            f"{dataset.name}: test accuracy {accuracy:.2%}", args.out / "confusion_matrix.png")
    print(f"{path}: confusion matrix")

    start = time.perf_counter()
    hand = by_hand.HandWrittenDigitNet(model).logits(dataset.test_images)
    same, worst = compare(hand, reference)
    hand_accuracy = float(np.mean(hand.argmax(axis=1) == dataset.test_labels))
    print(f"hand-written inference (stage 1's conv2d, relu, max_pool, fully_connected), "
          f"{time.perf_counter() - start:.1f} s with JIT compilation: same digit as torch on {same}/{len(hand)} "
          f"test images, largest |logit difference| {worst:.1e} (tolerance {LOGIT_TOLERANCE:g}), "
          f"accuracy {hand_accuracy:.2%}")

    failures = []
    if accuracy < TARGET_ACCURACY:
        failures.append(f"test accuracy {accuracy:.2%} is below {TARGET_ACCURACY:.0%}; train longer (--epochs)")
    if same != len(hand) or worst > LOGIT_TOLERANCE:
        failures.append("the hand-written inference disagrees with torch")
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    return EXIT_FAILED if failures else 0


if __name__ == "__main__":
    sys.exit(main())
