"""`python -m bench.profile STAGE --vs openvino` (bench/openvino_profile.py): OpenVINO's per-node times beside
ours, layer by layer. Every layer gets OpenVINO's time or is named as computed by no node of it, every node
names its kernel, rows merge where one side fuses what the other splits, and a library other than OpenVINO
is refused in one line. Never a speed."""

import os
import subprocess
import sys

import pytest

from bench import openvino_profile
from bench.openvino_profile import Node, compare, table
from bench.profile import profile
from bench.rows import DEFAULT_IMAGE
from common.architecture import resnet50
from common.image import load_image
from common.paths import REPO, WEIGHTS_DIR
from common.stages import STAGES
from common.trace import layers

STAGE = next(stage for stage in STAGES if stage.startswith("stage11_"))  # its kernels are in the kernel cache
RUNS = 1
NO_NODE = "our layers no OpenVINO node computes: "


@pytest.fixture(scope="module")
def both(manifest):
    image = load_image(DEFAULT_IMAGE, manifest["preprocessing"])
    ours = profile(STAGE, image, RUNS)
    return ours, openvino_profile.profile(WEIGHTS_DIR, image, os.cpu_count(), RUNS, ours["layers"], "openvino")


def test_every_layer_gets_an_openvino_time_or_is_listed(both):
    ours, theirs = both
    text = table(ours, theirs)
    names = {layer.name for layer in ours["layers"]}
    timed_layers, dashed = set(), set()
    for line in text.splitlines():
        fields = line.split()
        row = fields[0].rstrip("*").split("+") if fields else []
        if len(fields) >= 4 and row[0] in names:  # layer, MMACs, ours ms, OpenVINO ms, ...
            if fields[3] == "-":
                dashed.update(row)
            else:
                assert float(fields[3]) >= 0
                timed_layers.update(row)
    (listed,) = [line.removeprefix(NO_NODE) for line in text.splitlines() if line.startswith(NO_NODE)]
    untimed = set() if listed == "none" else set(listed.split(", "))
    assert dashed == untimed
    assert timed_layers | untimed == names and not timed_layers & untimed


def test_every_node_names_its_kernel(both):
    ours, theirs = both
    assert theirs["nodes"] and theirs["runs"] == ours["runs"] == RUNS
    for node in theirs["nodes"]:
        assert isinstance(node.kernel, str) and node.kernel, node.name
        assert node.seconds >= 0
    rows, _ = compare(ours["seconds"], theirs["nodes"], ours["layers"])
    assert all(row.kernels for row in rows if row.nodes)


def test_the_export_maps_every_layer_by_name(both):
    """The ONNX export keeps torchvision's weight names, so with it no layer is left without OpenVINO's time."""
    ours, theirs = both
    rows, _ = compare(ours["seconds"], theirs["nodes"], ours["layers"])
    assert [name for row in rows if not row.nodes for name in row.layers] == []


def test_rows_merge_where_one_side_fuses_and_strangers_stay_apart():
    expected = layers(resnet50("v1"))
    ours = {(layer.name,): 1.0 for layer in expected[:-2]} | {("avgpool", "fc"): 2.0}
    nodes = [Node("node_mean", "jit_avx512_f32", ("avgpool",), (1, 2048, 1, 1), 0.25),
             Node("logits", "gemm_mlas_f32", ("fc",), (1, 1000), 0.5),
             Node("image_reorder", "reorder_f32", (), (1, 3, 224, 224), 0.125)]
    rows, unmapped = compare(ours, nodes, expected)
    head = rows[-1]
    assert head.layers == ("avgpool", "fc") and head.ours_s == 2.0 and head.theirs_s == 0.75
    assert head.kernels == "jit_avx512_f32+gemm_mlas_f32"
    assert unmapped == nodes[2:]
    assert all(row.theirs_s is None for row in rows[:-1])
    text = table({"layers": expected, "seconds": ours, "forward_s": sum(ours.values())},
                 {"nodes": nodes, "runs": RUNS, "version": "test", "forward_s": 1.0, "precision": "float32"})
    assert f"{NO_NODE}{', '.join(layer.name for layer in expected[:-2])}" in text
    assert "reorder_f32: image_reorder" in text


def test_other_libraries_are_refused_in_one_line():
    result = subprocess.run([sys.executable, "-m", "bench.profile", STAGE, "--vs", "tensorflow"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 1
    expected = f"error: --vs tensorflow: only {' or '.join(openvino_profile.LIBRARIES)} can be profiled beside ours"
    assert result.stderr.strip() == expected
    assert result.stdout == ""
