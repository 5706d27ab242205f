"""The peers: what a user would run instead of our stages, on the same weights, image and thread count.

- ``pytorch``: PyTorch eager, torchvision's resnet50 with our exported weights (common.reference);
- ``onnxruntime`` and ``openvino``: that same torch model exported to ONNX once, then run by each runtime.

Each peer looks like a stage to the benchmark: ``forward(image_hwc) -> logits (1000,)`` and ``timings``, its
set-up costs in seconds. The ONNX file is cached under common.paths.CACHE_DIR, keyed by the weights' manifest,
so exporting (several seconds) is a one-off that no row's timings include.

    python -m bench.peers PEER IMAGE [--threads N]

classifies one photo with a peer, as a user of that library would: import, session, one inference, the top-5
as one JSON line (bench/first_answer.py times it).
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common.architecture import IMAGE_SIZE
from common.cli import positive_int
from common.errors import run_reporting_errors
from common.image import load_image
from common.labels import top5
from common.paths import CACHE_DIR, WEIGHTS_DIR
from common.reference import Reference
from common.weights import MANIFEST, load_manifest, sha256_file

ONNX_DIR = CACHE_DIR / "onnx"
ONNX_INPUT, ONNX_OUTPUT = "image", "logits"
MANIFEST_HASH_CHARS = 16  # enough of the manifest's sha256 to tell two weight exports apart


def to_nchw_batch(image_hwc: np.ndarray) -> np.ndarray:
    """HWC (224, 224, 3) -> NCHW (1, 3, 224, 224), the layout the ONNX model takes."""
    return np.ascontiguousarray(image_hwc.transpose(2, 0, 1))[None]


def onnx_model(weights_dir: Path = WEIGHTS_DIR) -> Path:
    """The ONNX export of the reference model for these weights, exported on first use.
    The export is written to a temporary file and renamed into place, so a crash leaves no half file."""
    manifest = load_manifest(weights_dir)
    key = sha256_file(Path(weights_dir) / MANIFEST)[:MANIFEST_HASH_CHARS]
    path = ONNX_DIR / f"resnet50-{manifest['variant']}-{key}.onnx"
    if path.is_file():
        return path
    import torch

    ONNX_DIR.mkdir(parents=True, exist_ok=True)
    model = Reference(weights_dir).model
    example = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)  # NCHW
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=ONNX_DIR)
    os.close(fd)
    try:
        # The torch.export-based exporter (onnxscript); the weights are kept inside the one .onnx file.
        torch.onnx.export(model, (example,), tmp, dynamo=True, external_data=False, verbose=False,
                          input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT])
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


class PyTorchPeer:
    def __init__(self, weights_dir: Path, threads: int):
        start = time.perf_counter()
        self.reference = Reference(weights_dir, threads=threads)
        self.timings = {"load weights": time.perf_counter() - start}

    def forward(self, image_hwc: np.ndarray) -> np.ndarray:
        return self.reference.forward(image_hwc)


class OnnxRuntimePeer:
    def __init__(self, weights_dir: Path, threads: int):
        import onnxruntime

        path = onnx_model(weights_dir)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1  # one image: the graph is a chain, nothing runs side by side
        start = time.perf_counter()
        self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.timings = {"compile": time.perf_counter() - start}

    def forward(self, image_hwc: np.ndarray) -> np.ndarray:
        return self.session.run([ONNX_OUTPUT], {ONNX_INPUT: to_nchw_batch(image_hwc)})[0][0]


# float32 like everyone else: on CPUs with bf16 units OpenVINO would otherwise compute in bf16.
OPENVINO_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}


class OpenVinoPeer:
    def __init__(self, weights_dir: Path, threads: int):
        import openvino

        path = onnx_model(weights_dir)
        config = {**OPENVINO_CONFIG, "INFERENCE_NUM_THREADS": threads}
        start = time.perf_counter()
        self.request = openvino.Core().compile_model(path, "CPU", config).create_infer_request()
        self.timings = {"compile": time.perf_counter() - start}

    def forward(self, image_hwc: np.ndarray) -> np.ndarray:
        return self.request.infer({0: to_nchw_batch(image_hwc)})[0][0]


PEER_CLASSES = {"pytorch": PyTorchPeer, "onnxruntime": OnnxRuntimePeer, "openvino": OpenVinoPeer}
PEERS = tuple(PEER_CLASSES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description="Classify one photo with a peer.")
    parser.add_argument("peer", choices=PEERS)
    parser.add_argument("image", type=Path)
    parser.add_argument("--threads", type=positive_int, default=os.cpu_count())
    args = parser.parse_args(argv)
    manifest = load_manifest(WEIGHTS_DIR)
    image = load_image(args.image, manifest["preprocessing"])
    logits = PEER_CLASSES[args.peer](WEIGHTS_DIR, args.threads).forward(image)
    print(json.dumps({"image": str(args.image), "top5": top5(logits, manifest["labels"])}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
