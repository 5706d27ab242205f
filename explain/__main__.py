"""`make explain IMG=photo.jpg`: where in the photo the network found its answer, and what it looked at.

    python -m explain IMAGE [-o DIR] [--stage N]

Runs one stage (default: the fastest) on the photo once, with common.trace capturing the output of the stem
and of each layer group as the stage's own kernels write them (its forward pass is not changed), and writes
into DIR (default out/explain):

    cam.png        the 224x224 crop the network saw, the top-1 class's activation map laid over it
    cam_top3.png   the same for the top 3 classes, side by side
    cam.npy        the top-1 class's map at 7x7, float32, before upsampling and scaling (fc bias left out)
    filters.png    conv1's 64 filters, batch norm folded in
    features.png   the strongest channels at the end of the stem and of layer1..layer4
    sheet.png      all of it on one contact sheet

and prints one JSON line: {"image", "stage", "top5": [{"class_id", "label", "prob"}], "files"}. The files are
written into a fresh folder first and then moved into place, so a failure leaves nothing half-written. A bad
photo, missing or damaged weights, or an output folder that cannot be written is one line on stderr, exit
code 1, as for the stages; usage mistakes exit with 2, as argparse does.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from common.architecture import resnet50
from common.errors import UserError, run_reporting_errors
from common.image import load_crop, normalize
from common.labels import top5
from common.paths import WEIGHTS_DIR
from common.stages import EXPLAINED, find_stage, precision, record, stage_module, stage_number
from common.trace import GROUPS, capture
from common.weights import load_manifest, load_tensor
from explain import pictures
from explain.cam import class_activation_map

OUT_DIR = Path("out/explain")
TOP_MAPS = 3  # classes in cam_top3.png
FOLDER_MODE = 0o777  # a new output folder gets this, less the umask, like any folder mkdir makes
CAM, CAM_TOP3, CAM_NPY = "cam.png", "cam_top3.png", "cam.npy"
FILTERS, FEATURES, SHEET = "filters.png", "features.png", "sheet.png"


def conv1_filters(manifest: dict, weights_dir: Path) -> np.ndarray:
    """The stem conv's filters as they act on the photo's pixels: OHWI float64, input channels in RGB order.
    Batch norm is folded in (each filter times its channel's gamma / sqrt(var + eps)), so that a filter shows
    what makes its channel fire after the ReLU even where gamma is negative; each input channel is divided by
    the std the pixels were divided by; weights for BGR input have their channels turned around."""
    stem = resnet50(manifest["variant"]).stem

    def tensor(name: str) -> np.ndarray:
        return load_tensor(name, manifest, weights_dir).astype(np.float64)

    scale = tensor(f"{stem.bn}.weight") / np.sqrt(tensor(f"{stem.bn}.running_var") + manifest["bn_eps"])
    preprocessing = manifest["preprocessing"]
    weight = tensor(f"{stem.name}.weight") * scale[:, None, None, None]  # OIHW
    weight /= np.asarray(preprocessing["std"], np.float64)[None, :, None, None]
    if preprocessing["channel_order"] == "BGR":
        weight = weight[:, ::-1]
    return weight.transpose(0, 2, 3, 1)


def explain(path: Path, stage: str, weights_dir: Path) -> tuple[list[dict], dict[str, Image.Image | np.ndarray]]:
    """The top-5 and every output, by file name, computed in memory: nothing is written here."""
    manifest = load_manifest(weights_dir)
    photo = load_crop(path, manifest["preprocessing"])  # HWC uint8 RGB, 224x224
    print(f"{stage}: building the model, then one traced forward pass of {path}", file=sys.stderr, flush=True)
    model = stage_module(stage).Model(weights_dir=weights_dir)
    logits, activations = capture(model, normalize(photo, manifest["preprocessing"]), manifest["variant"])
    top = top5(logits, manifest["labels"])
    fc_weight = load_tensor(f"{resnet50(manifest['variant']).fc.name}.weight", manifest, weights_dir)
    last = activations[GROUPS[-1]]  # layer4's output: what global average pooling and fc read

    def cam_of(entry: dict) -> tuple[np.ndarray, str]:
        title = f"{entry['label']} {entry['prob']:.1%}"
        return class_activation_map(last, fc_weight, entry["class_id"]), title

    maps = [cam_of(entry) for entry in top[:TOP_MAPS]]
    cams = [pictures.cam_picture(photo, cam, title) for cam, title in maps]
    weights = conv1_filters(manifest, weights_dir)
    count, height, width, _ = weights.shape
    filters = pictures.filters_picture(weights, f"conv1's {count} filters, {height}x{width} RGB, batch norm folded in")
    features = pictures.features_picture({group: activations[group] for group in GROUPS})
    summary = pictures.text_panel([f"{path.name}, {stage}", *(f"{t['prob']:7.2%}  {t['label']}" for t in top)])
    seen = pictures.with_text(Image.fromarray(photo), "the crop the network saw")
    sheet = pictures.contact_sheet([summary, seen, pictures.row(cams), filters, features])
    outputs = {CAM: cams[0], CAM_TOP3: pictures.row(cams), CAM_NPY: maps[0][0], FILTERS: pictures.framed(filters),
               FEATURES: pictures.framed(features), SHEET: sheet}
    return top, outputs


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def staging_folder(out_dir: Path) -> Iterator[Path]:
    """A fresh folder beside out_dir to write the outputs into, made before the work, so that a place that
    cannot be written is reported at once. It is removed at the end; if the outputs never arrive, so are the
    folders made for it."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: is a file, not a folder; choose an output folder with -o")
    made = next((folder for folder in reversed(out_dir.absolute().parents) if not folder.exists()), None)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    except OSError as e:
        raise UserError(f"{out_dir}: cannot write the outputs ({e.strerror or e}); choose another folder with -o"
                        ) from None
    try:
        yield staging
    except BaseException:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_outputs(staging: Path, out_dir: Path, outputs: dict[str, Image.Image | np.ndarray]) -> list[Path]:
    """Every output written into the staging folder, then moved into place: a new out_dir appears whole (the
    staging folder becomes it), and in an existing one each file is replaced whole."""
    try:
        for name, content in outputs.items():
            if isinstance(content, np.ndarray):
                np.save(staging / name, content)
            else:
                content.save(staging / name)
        if out_dir.is_dir():
            for name in outputs:
                os.replace(staging / name, out_dir / name)
        else:
            staging.chmod(FOLDER_MODE & ~umask())
            staging.rename(out_dir)
    except OSError as e:
        raise UserError(f"{out_dir}: cannot write the outputs ({e.strerror or e}); choose another folder with -o"
                        ) from None
    return [out_dir / name for name in outputs]


def stage_choice(text: str) -> str:
    """A float32 stage: the maps are drawn from the activations' values, and a reduced-precision stage keeps codes
    of them (stage13_int8: u8 codes of per-tensor scales that the trace does not know; stage14_bf16: bfloat16 bit
    patterns in uint16 arrays)."""
    try:
        stage = find_stage(text)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if precision(stage) != "float32":
        raise argparse.ArgumentTypeError(f"{stage} keeps its activations as {precision(stage)} codes, not values; "
                                         f"explain a float32 stage (stage{stage_number(EXPLAINED)} by default)")
    if record(stage).rewrites:
        raise argparse.ArgumentTypeError(f"{stage} computes a rewritten network, in which some layers' outputs exist "
                                         f"only in part; explain stage{stage_number(EXPLAINED)} (the default)")
    return stage


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m explain",
                                     description="Class activation maps, conv1's filters and feature maps of one "
                                                 "photo, computed by one stage.")
    parser.add_argument("image", type=Path, metavar="IMAGE", help="any photo Pillow can read")
    parser.add_argument("-o", "--out", type=Path, default=OUT_DIR, metavar="DIR",
                        help="output folder (default: %(default)s)")
    parser.add_argument("--stage", type=stage_choice, default=EXPLAINED, metavar="N",
                        help="stage number or folder name (default: the fastest that computes every layer's output, "
                             "%(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        with staging_folder(args.out) as staging:
            top, outputs = explain(args.image, args.stage, WEIGHTS_DIR)
            files = write_outputs(staging, args.out, outputs)
        print(json.dumps({"image": str(args.image), "stage": args.stage, "top5": top,
                          "files": [str(f) for f in files]}), flush=True)
        return 0

    return run_reporting_errors(body)


if __name__ == "__main__":
    sys.exit(main())
