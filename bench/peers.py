"""The peers: what a user would run instead of our stages, on the same weights, image and thread count.

In float32, as every stage computes whose folder name does not end in a reduced precision:

- ``pytorch``: PyTorch eager, torchvision's resnet50 with our exported weights (common.reference);
- ``onnxruntime`` and ``openvino``: that same torch model exported to ONNX once, then run by each runtime.

In reduced precision, beside the stages that compute in it (a stage folder ending in _int8 or _bf16):

- ``openvino-bf16``: the same ONNX file compiled by OpenVINO with the bfloat16 inference precision: every
  convolution and the fc layer take bfloat16 inputs (8 bits of mantissa) and sum in float32, and the activations
  pass from layer to layer in bfloat16. The build stops with an error on a CPU where OpenVINO does not compute the
  convolutions in bfloat16 (it needs AVX512_BF16 or AMX);
- ``openvino-int8``: the ONNX file quantized by NNCF's post-training quantization, as an OpenVINO user does it:
  ``nncf.quantize`` with its defaults (the performance preset: symmetric 8-bit weights per output channel and
  activations per tensor, fast bias correction) on common.photos.calibration_photos(); the convolutions and the fc
  layer then run on u8 x i8 codes, and the few operations NNCF leaves in float run in float32 (OPENVINO_CONFIG);
- ``onnxruntime-int8``: the ONNX file quantized by ONNX Runtime's ``quantize_static`` on the same photos, after
  ``quant_pre_process`` (shape inference and graph optimization, which ONNX Runtime's quantization guide asks
  for first), in the QDQ format with weights per channel (ORT_QUANTIZATION). Activations are QUInt8 and weights
  QInt8 (U8S8), what ``quantize_static``'s guidance recommends for x86 CPUs: their 8-bit dot product instructions
  (VNNI's vpdpbusd, AVX2's vpmaddubsw) multiply unsigned bytes by signed ones; S8S8 took 2.5x U8S8's time here
  (Intel Xeon, 2026-12-02). Without VNNI the guidance adds ``reduce_range`` (7-bit weights, so that vpmaddubsw's
  16-bit sums cannot saturate), and so does this peer. The ranges come from the Percentile calibration
  (99.999th percentile) rather than the default MinMax: with MinMax, pics/cat.png came out "tiger cat" instead of
  float32's "Egyptian cat", and the top-1 agreed with float32 on 56 of the 66 evaluation photos
  (common.photos.evaluation_photos), 57 with Percentile (NNCF's model: 63).

Each peer looks like a stage to the benchmark: ``forward(image_hwc) -> logits (1000,)`` and ``timings``, its
set-up costs in seconds. The ONNX file and the quantized models are cached under common.paths.CACHE_DIR, keyed by
the weights' manifest, and the quantized ones also by the calibration photos (common.photos.calibration_key), the
quantizer's version and settings, so exporting and quantizing (seconds each) are one-offs that no row's timings
include; each is written to a temporary name and renamed into place, so a crash leaves no half file.

    python -m bench.peers PEER IMAGE [--threads N]

classifies one photo with a peer, as a user of that library would: import, session, one inference, the top-5
as one JSON line (bench/first_answer.py times it).
"""

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from contextlib import redirect_stdout
from importlib import metadata
from pathlib import Path

import numpy as np

from common.architecture import IMAGE_SIZE
from common.cli import positive_int
from common.errors import UserError, run_reporting_errors, say
from common.image import load_image
from common.labels import top5
from common.paths import CACHE_DIR, WEIGHTS_DIR
from common.photos import SETUP_DEV, calibration_key, calibration_photos
from common.reference import Reference
from common.weights import MANIFEST, load_manifest, sha256_file
from stages import PRECISION_PEAK

ONNX_DIR = CACHE_DIR / "onnx"
ONNX_INPUT, ONNX_OUTPUT = "image", "logits"
MANIFEST_HASH_CHARS = 16  # enough of the manifest's sha256 to tell two weight exports apart
RECIPE_HASH_CHARS = 16  # the same for a quantized model's photos, quantizer and settings
# What a row computes in, as the table names it; a stage says it by its folder name's end (common.stages.precision).
FLOAT32, BF16, INT8 = "float32", "bf16", "int8"
# quantize_static's settings beside the model and the photos, by name (the key of the cached model is made of them).
ORT_QUANTIZATION = {"quant_format": "QDQ", "per_channel": True, "activation_type": "QUInt8", "weight_type": "QInt8",
                    "calibrate_method": "Percentile"}
VNNI_FEATURES = ("avx512vnni", "avxvnni")  # as LLVM names them: the 8-bit dot product instructions


def to_nchw_batch(image_hwc: np.ndarray) -> np.ndarray:
    """HWC (224, 224, 3) -> NCHW (1, 3, 224, 224), the layout the ONNX model takes."""
    return np.ascontiguousarray(image_hwc.transpose(2, 0, 1))[None]


def model_stem(weights_dir: Path) -> str:
    """The start of the name of every cached model of these weights: the variant and the manifest's digest."""
    manifest = load_manifest(weights_dir)
    return f"resnet50-{manifest['variant']}-{sha256_file(Path(weights_dir) / MANIFEST)[:MANIFEST_HASH_CHARS]}"


def onnx_model(weights_dir: Path = WEIGHTS_DIR) -> Path:
    """The ONNX export of the reference model for these weights, exported on first use.
    The export is written to a temporary file and renamed into place, so a crash leaves no half file."""
    path = ONNX_DIR / f"{model_stem(weights_dir)}.onnx"
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


def _recipe(weights_dir: Path, quantizer: str, settings: dict) -> str:
    """The digest that names a quantized model beside its weights' stem: the calibration photos, the quantizer's
    version and its settings; any of them changed, the model is quantized again."""
    try:
        version = metadata.version(quantizer)
    except metadata.PackageNotFoundError:
        raise UserError(f"{quantizer} is not installed here, and an {INT8} peer quantizes with it; "
                        f"{SETUP_DEV}") from None
    stamp = [calibration_key(load_manifest(weights_dir)["preprocessing"]), quantizer, version, settings]
    return hashlib.sha256(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:RECIPE_HASH_CHARS]


def _calibration_inputs(weights_dir: Path, quantizer: str, source: Path) -> list[np.ndarray]:
    """The calibration photos as the ONNX model takes them, after a line saying what is about to take seconds."""
    photos = calibration_photos(load_manifest(weights_dir)["preprocessing"])
    say(f"quantizing {source.name} with {quantizer} on {len(photos)} calibration inputs (once: kept in {ONNX_DIR})")
    return [to_nchw_batch(image) for _, image in photos]


def openvino_int8_model(weights_dir: Path = WEIGHTS_DIR) -> Path:
    """The OpenVINO IR (.xml and its .bin) of the ONNX model quantized by NNCF with its defaults, made on first use.
    Both files are written into a temporary folder and renamed into place, the .bin first: an .xml is whole."""
    # OpenVINO reads the ONNX file into the model NNCF quantizes: its version is part of the recipe too.
    recipe = _recipe(weights_dir, "nncf", {"openvino": metadata.version("openvino")})
    path = ONNX_DIR / f"{model_stem(weights_dir)}-openvino-int8-{recipe}.xml"
    weights = path.with_suffix(".bin")
    if path.is_file() and weights.is_file():
        return path
    import nncf
    import openvino

    source = onnx_model(weights_dir)
    inputs = _calibration_inputs(weights_dir, "NNCF", source)
    with redirect_stdout(sys.stderr):  # NNCF's progress bars: stdout is for answers
        # Every calibration input: NNCF's default subset (300) is more than there are.
        quantized = nncf.quantize(openvino.Core().read_model(source), nncf.Dataset(inputs), subset_size=len(inputs))
    with tempfile.TemporaryDirectory(dir=ONNX_DIR) as tmp:
        # Without compress_to_fp16 (save_model's default), which would store the float constants NNCF leaves, and
        # its quantization ranges, as float16.
        openvino.save_model(quantized, Path(tmp) / path.name, compress_to_fp16=False)
        os.replace(Path(tmp) / weights.name, weights)
        os.replace(Path(tmp) / path.name, path)
    return path


def _vnni() -> bool:
    """Whether this CPU has VNNI's 8-bit dot products, with 32-bit sums that cannot saturate."""
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    return any(features.get(name, False) for name in VNNI_FEATURES)


def onnxruntime_int8_model(weights_dir: Path = WEIGHTS_DIR) -> Path:
    """The ONNX model pre-processed and quantized by ONNX Runtime's quantize_static, made on first use, written to a
    temporary name and renamed into place."""
    settings = {**ORT_QUANTIZATION, "reduce_range": not _vnni()}
    recipe = _recipe(weights_dir, "onnxruntime", settings)
    path = ONNX_DIR / f"{model_stem(weights_dir)}-onnxruntime-int8-{recipe}.onnx"
    if path.is_file():
        return path
    from onnxruntime import quantization
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = onnx_model(weights_dir)
    inputs = iter(_calibration_inputs(weights_dir, "ONNX Runtime", source))

    class Photos(quantization.CalibrationDataReader):
        def get_next(self) -> dict | None:
            image = next(inputs, None)
            return None if image is None else {ONNX_INPUT: image}

    enums = {"quant_format": quantization.QuantFormat, "activation_type": quantization.QuantType,
             "weight_type": quantization.QuantType, "calibrate_method": quantization.CalibrationMethod}
    options = {key: enums[key][value] if key in enums else value for key, value in settings.items()}
    with tempfile.TemporaryDirectory(dir=ONNX_DIR) as tmp, redirect_stdout(sys.stderr):  # its calibration prints
        prepared = Path(tmp) / "pre-processed.onnx"
        quant_pre_process(source, prepared)
        quantization.quantize_static(prepared, Path(tmp) / path.name, Photos(), **options)
        os.replace(Path(tmp) / path.name, path)
    return path


class PyTorchPeer:
    precision = FLOAT32
    peak = PRECISION_PEAK[FLOAT32]  # the instruction whose measured peak the row's share is of (stages.PEAKS)
    model_file = None  # builds its model from the weights themselves

    def __init__(self, weights_dir: Path, threads: int):
        start = time.perf_counter()
        self.reference = Reference(weights_dir, threads=threads)
        self.timings = {"load weights": time.perf_counter() - start}

    def forward(self, image_hwc: np.ndarray) -> np.ndarray:
        return self.reference.forward(image_hwc)


class OnnxRuntimePeer:
    precision = FLOAT32
    peak = PRECISION_PEAK[FLOAT32]
    model_file = staticmethod(onnx_model)

    def __init__(self, weights_dir: Path, threads: int):
        import onnxruntime

        path = self.model_file(weights_dir)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1  # one image: the graph is a chain, nothing runs side by side
        start = time.perf_counter()
        self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.timings = {"compile": time.perf_counter() - start}

    def forward(self, image_hwc: np.ndarray) -> np.ndarray:
        return self.session.run([ONNX_OUTPUT], {ONNX_INPUT: to_nchw_batch(image_hwc)})[0][0]


class OnnxRuntimeInt8Peer(OnnxRuntimePeer):
    precision = INT8
    peak = PRECISION_PEAK[INT8]
    model_file = staticmethod(onnxruntime_int8_model)


# float32 like everyone else: on CPUs with bf16 units OpenVINO would otherwise compute in bf16.
OPENVINO_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
OPENVINO_BF16_CONFIG = {**OPENVINO_CONFIG, "INFERENCE_PRECISION_HINT": "bf16"}
# The AMX instruction of a precision: bench.peak measures tdpbf16ps's peak, not tdpbusd's, so an int8 row on AMX has
# no share of a peak.
AMX_PEAK = {BF16: "tdpbf16ps", INT8: "tdpbusd", FLOAT32: "none"}  # AMX has no float32 products
# The precisions OpenVINO may run a reduced-precision peer's convolutions in, as its runtime model names them.
OPENVINO_CONV_PRECISIONS = {BF16: {"bf16"}, INT8: {"u8", "i8"}}
OPENVINO_CONV = "Convolution"


def check_precision(compiled, precision: str) -> None:
    """OpenVINO compiled for bf16 or int8 must compute in it: it picks each node's precision from what the CPU can
    do, and says what it picked in its runtime model."""
    picked = {op.get_rt_info()["runtimePrecision"].astype(str) for op in compiled.get_runtime_model().get_ops()
              if op.get_rt_info()["layerType"].astype(str) == OPENVINO_CONV}
    if not picked <= OPENVINO_CONV_PRECISIONS[precision]:
        raise UserError(f"OpenVINO runs the convolutions in {', '.join(sorted(picked))} on this CPU, not in "
                        f"{precision}: it has no {precision} instructions for them; leave this peer out")


class OpenVinoPeer:
    precision = FLOAT32
    model_file = staticmethod(onnx_model)
    config = OPENVINO_CONFIG

    def __init__(self, weights_dir: Path, threads: int):
        import openvino

        path = self.model_file(weights_dir)
        config = {**self.config, "INFERENCE_NUM_THREADS": threads}
        start = time.perf_counter()
        compiled = openvino.Core().compile_model(path, "CPU", config)
        self.request = compiled.create_infer_request()
        self.timings = {"compile": time.perf_counter() - start}
        if self.precision in OPENVINO_CONV_PRECISIONS:
            check_precision(compiled, self.precision)
        # Its convolutions' kernels by name: "brgconv_avx512_amx_bf16" where it computes on AMX, whose peak the
        # row's share of the peak is then of (bench/report.py).
        kernels = {op.get_rt_info()["primitiveType"].astype(str) for op in compiled.get_runtime_model().get_ops()
                   if op.get_rt_info()["layerType"].astype(str) == OPENVINO_CONV}
        self.peak = PRECISION_PEAK[self.precision]
        if any("_amx" in kernel for kernel in kernels):
            self.peak = AMX_PEAK[self.precision]

    def forward(self, image_hwc: np.ndarray) -> np.ndarray:
        return self.request.infer({0: to_nchw_batch(image_hwc)})[0][0]


class OpenVinoBf16Peer(OpenVinoPeer):
    precision = BF16
    config = OPENVINO_BF16_CONFIG


class OpenVinoInt8Peer(OpenVinoPeer):
    precision = INT8
    model_file = staticmethod(openvino_int8_model)


PEER_CLASSES = {"pytorch": PyTorchPeer, "onnxruntime": OnnxRuntimePeer, "openvino": OpenVinoPeer,
                "openvino-bf16": OpenVinoBf16Peer, "onnxruntime-int8": OnnxRuntimeInt8Peer,
                "openvino-int8": OpenVinoInt8Peer}
PEERS = tuple(PEER_CLASSES)


def prepare(peer: str, weights_dir: Path = WEIGHTS_DIR) -> None:
    """Makes the files a peer loads (the ONNX export, a quantized model) if they are not made yet, so that timing
    the peer's first answer counts none of that one-off work."""
    make = PEER_CLASSES[peer].model_file
    if make is not None:
        make(weights_dir)


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
