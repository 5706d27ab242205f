"""The benchmark harness itself (bench/): it runs, writes every row and field, renders the table and the chart,
profiles a stage layer by layer, and refuses what it cannot do with a one-line error. Never a speed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.kernels import one_by_one
from bench.paths import KERNELS_JSON, KERNELS_PNG, LATEST_JSON, LATEST_MD, LATEST_PNG
from bench.peers import PEERS
from bench.report import COLUMNS, END_TO_END_COLUMNS, build_end_to_end, build_rows, markdown_table
from bench.rows import build, precision, same_precision
from common.architecture import resnet50
from common.cli import DECODERS
from common.errors import UserError
from common.image import LOADERS
from common.paths import PICS_DIR, REPO, WEIGHTS_DIR
from common.stages import FASTEST, stage_module
from common.trace import attribute, layers
from common.weights import load_manifest
from stages import FLOAT32, PRECISION_PEAK

PEER = "onnxruntime"
FLOAT32_PEERS = ("pytorch", "onnxruntime", "openvino")
INT8_PEERS = ("onnxruntime-int8", "openvino-int8")
REDUCED_PEERS = ("openvino-bf16", *INT8_PEERS)
ROUNDS = 2
BLOCKS = 3  # of the interleaved comparison: enough for quartiles
PHOTOS = DECODERS  # end to end: passes over the folder, one batch before the clock starts, the rest timed
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROW_FIELDS = {key for key, _, _ in COLUMNS} | {"name", "kind", "setup_s", "build_s", "first_forward_s", "top1"}
SECONDS = {"build_s", "first_forward_s"}
FIRST_ANSWER = ("first_answer_cold_s", "first_answer_warm_s")
NO_KERNEL_CACHE = "stage4_prealloc"  # compiles at every start: its cold first answer compiles no more than its warm one
MACHINE_FIELDS = {"cpu", "cores", "threads", "python", "numpy", "numba", "torch"}
END_TO_END_FIELDS = {key for key, _, _ in END_TO_END_COLUMNS} | {"name", "stage", "loader", "photos", "passes",
                                                                 "decoders", "command", "status"}


def run(*args: str) -> subprocess.CompletedProcess:
    """python -m args, as a user starts it: without the variables that mark this process as an xdist worker,
    from which pytest-benchmark, in the bench's own pytest, would conclude that it runs in one and turn off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # Without the times to first answer: the cold one would compile the stage's kernels a second time in this test
    # run (test_first_answer_times_fresh_processes checks them).
    result = run("bench", "--out", str(out), "--stages", FASTEST, "--peers", PEER, "--no-first-answer", "--seconds",
                 "0", "--min-rounds", str(ROUNDS), "--max-rounds", str(ROUNDS), "--photos", str(PHOTOS),
                 "--blocks", str(BLOCKS), "--passes", "1")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return out, result


@pytest.mark.slow
def test_bench_writes_every_row_and_field(bench_run):
    out, _ = bench_run
    summary = json.loads((out / LATEST_JSON).read_text())
    assert MACHINE_FIELDS <= set(summary["machine"])
    assert [r["name"] for r in summary["rows"]] == [FASTEST, PEER]
    for row in summary["rows"]:
        assert ROW_FIELDS <= set(row), f"{row['name']} lacks {ROW_FIELDS - set(row)}"
        assert row["rounds"] == ROUNDS
        assert row["min_ms"] <= row["median_ms"] <= row["p90_ms"]
        assert row["fps"] == pytest.approx(1000.0 / row["median_ms"])
        assert row["gflops"] == pytest.approx(2 * summary["macs"] / row["median_ms"] / 1e6)
        assert row["top1"]["label"]
        assert all(row[key] > 0 for key in SECONDS), {key: row[key] for key in SECONDS}
        assert all(row[key] is None for key in FIRST_ANSWER), "a time to first answer that was not measured"
    fastest = summary["rows"][0]
    assert [run["loader"] for run in summary["end_to_end"]] == list(LOADERS)
    for run in summary["end_to_end"]:
        assert END_TO_END_FIELDS <= set(run), f"{run['name']} lacks {END_TO_END_FIELDS - set(run)}"
        assert run["stage"] == FASTEST and run["photos"] == PHOTOS
        assert run["rounds"] == PHOTOS * run["passes"] - run["decoders"]
        assert run["forward_fps"] == fastest["fps"]
        assert run["vs_forward"] == pytest.approx(run["photos_per_s"] / fastest["fps"])
    interleaved = summary["interleaved"]
    assert interleaved["stage"] == FASTEST and list(interleaved["ratios"]) == [PEER]
    blocks = interleaved["rows"]
    assert [len(blocks[name]) for name in (FASTEST, PEER)] == [BLOCKS, BLOCKS]
    ratios = [ours / theirs for ours, theirs in zip(blocks[FASTEST], blocks[PEER], strict=True)]
    r = interleaved["ratios"][PEER]
    assert r["min"] <= r["q1"] <= r["median"] <= r["q3"] <= r["max"]
    assert r["median"] == pytest.approx(float(np.median(ratios))) and r["min"] == pytest.approx(min(ratios))


@pytest.mark.slow
def test_bench_times_each_1x1_conv_kernel_alone(bench_run):
    """kernels.json: the stage's kernel of every 1x1 layer shape, timed, and the peak of its instruction to draw it
    against; and its chart. (Not how fast: on a shared machine, or beside the other test worker, a kernel timed in
    a quiet moment can pass a peak measured in a busy one.)"""
    out, _ = bench_run
    kernels = json.loads((out / KERNELS_JSON).read_text())
    network = stage_module(FASTEST).PARTS.architecture(load_manifest()["variant"])  # as the stage computes it
    assert list(kernels["gflops"]) == [FASTEST] and list(kernels["gflops"][FASTEST]) == list(one_by_one(network))
    assert all(gflops > 0 for gflops in kernels["gflops"][FASTEST].values())
    assert kernels["peaks_gflops"][kernels["peak_of"][FASTEST]] > 0
    assert (out / KERNELS_PNG).read_bytes().startswith(PNG_MAGIC)


@pytest.mark.slow
def test_bench_renders_table_chart_and_progress(bench_run):
    out, result = bench_run
    table = (out / LATEST_MD).read_text()
    for title in ["row"] + [title for _, title, _ in COLUMNS]:
        assert f" {title} |" in table
    assert f"| {FASTEST} |" in table and f"| {PEER} |" in table
    assert f"| {FASTEST} |" in result.stdout  # the table is also printed
    for loader in LOADERS:
        assert f"| {FASTEST} end to end, {loader} |" in table and f"| {FASTEST} end to end, {loader} |" in result.stdout
    assert f"| {PEER} | " in table.split("interleaved in one process")[1]  # the interleaved ratios' table
    png = (out / LATEST_PNG).read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > len(PNG_MAGIC)
    assert f"{FASTEST}: round {ROUNDS}/{ROUNDS}" in result.stderr
    assert list((out / "history").rglob("*.json")), "the run was not saved for later comparison"


@pytest.mark.slow
@pytest.mark.parametrize("row, kind", [(NO_KERNEL_CACHE, "stage"), (PEER, "peer")])
def test_first_answer_times_fresh_processes(row, kind):
    from bench.first_answer import first_answer

    seconds = first_answer(row, kind, PICS_DIR / "cat.png", threads=1)
    assert set(seconds) == {"cold", "warm"} and all(s > 0 for s in seconds.values()), seconds


def test_busy_core_spins_until_the_block_ends():
    from bench.busy import busy_core

    before = {p.name for p in Path("/proc").iterdir() if p.name.isdigit()}
    with busy_core() as core:
        children = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and p.name not in before
                    and f"PPid:\t{os.getpid()}\n" in (p / "status").read_text()]
        assert len(children) == 1 and os.sched_getaffinity(children[0]) == {core}
    assert not Path(f"/proc/{children[0]}").exists(), "the spinning child outlived the block"


@pytest.mark.slow
def test_bench_busy_compares_the_stage_with_itself_at_one_thread(tmp_path):
    result = run("bench", "--busy", "--stages", FASTEST, "--peers", "none", "--blocks", str(BLOCKS), "--passes", "1",
                 "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    busy = json.loads((tmp_path / "busy.json").read_text())
    default, *others = busy["rows"]
    assert busy["busy"] and default.startswith(f"{FASTEST}, default (") and busy["first"] == default
    assert others == [f"{FASTEST}, {busy['threads']} threads", f"{FASTEST}, 1 thread"] == list(busy["ratios"])
    assert all(f"| {row} | " in result.stdout for row in others)
    assert not (tmp_path / LATEST_JSON).exists(), "--busy runs the busy comparison only"


def fake_benchmark(name: str, kind: str, seconds: list[float], precision: str = FLOAT32,
                   predecessor: str | None = None) -> dict:
    """One entry as pytest-benchmark writes it (bench/test_latency.py), with only the fields report.py reads."""
    stats = {"median": float(np.median(seconds)), "min": min(seconds), "mean": float(np.mean(seconds)),
             "stddev": float(np.std(seconds)), "rounds": len(seconds), "data": seconds}
    extra = {"kind": kind, "setup_s": {"load weights": 0.5, "codegen": 0.25, "compile": 1.0}, "build_s": 2.0,
             "first_forward_s": 3.0, "top1": {"class_id": 285, "label": "Egyptian cat"}, "threads": 2,
             "macs": 4_000_000_000, "precision": precision, "peak": PRECISION_PEAK[precision],
             "predecessor": predecessor}
    return {"param": name, "stats": stats, "extra_info": extra}


def test_report_ratios_follow_the_definitions():
    raw = {"benchmarks": [fake_benchmark("pytorch", "peer", [0.05]),
                          fake_benchmark("stage3_x", "stage", [0.5], predecessor="stage2_x"),
                          fake_benchmark("stage1_x", "stage", [4.0, 2.0, 3.0]),
                          fake_benchmark("stage2_x", "stage", [1.0], predecessor="stage1_x"),
                          fake_benchmark("stage10_x", "stage", [0.25], predecessor="stage2_x")]}
    rows = {r["name"]: r for r in build_rows(raw)}
    assert list(rows) == ["stage1_x", "stage2_x", "stage3_x", "stage10_x", "pytorch"]
    assert rows["stage3_x"]["speedup_vs_stage1"] == pytest.approx(3.0 / 0.5)
    assert rows["stage3_x"]["speedup_vs_previous"] == pytest.approx(1.0 / 0.5)
    assert rows["stage10_x"]["speedup_vs_previous"] == pytest.approx(1.0 / 0.25)  # its predecessor's, not stage3_x's
    assert rows["stage1_x"]["speedup_vs_previous"] is None and rows["pytorch"]["speedup_vs_previous"] is None
    assert rows["stage2_x"]["time_vs_pytorch"] == pytest.approx(1.0 / 0.05)
    assert rows["stage1_x"]["codegen_compile_s"] == pytest.approx(1.25)
    assert rows["stage1_x"]["gflops"] == pytest.approx(2 * 4.0 / 3.0)
    assert "| stage2_x | float32 | 1000 |" in markdown_table(list(rows.values()))


def test_every_row_says_its_precision():
    """A peer says its precision, a stage's record says its own; the run keeps it, and the table shows it."""
    rows = [("stage11_winograd4", "stage"), ("stage13_int8", "stage"), ("openvino", "peer"), ("openvino-bf16", "peer"),
            ("onnxruntime-int8", "peer"), ("openvino-int8", "peer")]
    raw = {"benchmarks": [fake_benchmark(name, kind, [0.01], precision(name)) for name, kind in rows]}
    rows = {r["name"]: r["precision"] for r in build_rows(raw)}
    assert rows == {"stage11_winograd4": "float32", "stage13_int8": "int8", "openvino": "float32",
                    "openvino-bf16": "bf16", "onnxruntime-int8": "int8", "openvino-int8": "int8"}
    assert "| openvino-int8 | int8 | 10.00 |" in markdown_table(build_rows(raw))


def test_a_stage_is_compared_side_by_side_with_the_peers_of_its_precision():
    assert same_precision(FASTEST, list(PEERS)) == list(FLOAT32_PEERS)
    assert same_precision("stage13_int8", list(PEERS)) == list(INT8_PEERS)


@pytest.mark.slow
@pytest.mark.parametrize("peer", REDUCED_PEERS)
def test_reduced_precision_peer_agrees_with_float32(peer, images, reference_logits):
    """Its top-1 on pics/cat.png is the float32 reference's (the first build quantizes, once per cache)."""
    cat = PICS_DIR / "cat.png"
    logits = build(peer, WEIGHTS_DIR, threads=1).forward(images[cat])
    assert logits.shape == reference_logits[cat].shape and np.isfinite(logits).all()
    assert int(np.argmax(logits)) == int(np.argmax(reference_logits[cat]))


def test_end_to_end_rate_is_photos_over_their_time():
    """photos/s = timed photos / the time between their result lines (1 / the mean wait, not the median: photos
    come out a batch at a time), set beside the same stage's forward-only rate."""
    waits = [0.010, 0.030, 0.010, 0.030, 0.010, 0.030]
    run = fake_benchmark("stage9_x", "end_to_end", waits)
    run["extra_info"].update({"stage": "stage9_x", "loader": "pillow"})
    raw = {"benchmarks": [fake_benchmark("stage9_x", "stage", [0.010]), run]}
    rows = build_rows(raw)
    (got,) = build_end_to_end(raw, rows)
    assert [r["name"] for r in rows] == ["stage9_x"]
    assert got["photos_per_s"] == pytest.approx(len(waits) / sum(waits))
    assert got["forward_fps"] == pytest.approx(100.0) and got["vs_forward"] == pytest.approx(0.5)
    assert "| stage9_x end to end, pillow | 50.0 | 100.0 | 0.50× |" in markdown_table([got], END_TO_END_COLUMNS)


@pytest.mark.slow
def test_profile_lists_every_layer():
    result = run("bench.profile", FASTEST, "--runs", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split()[0] for line in result.stdout.splitlines()[3:]]
    names = [name for row in rows for name in row.split("+")]  # a fused kernel's row names its layers
    expected = [layer.name for layer in layers(resnet50(load_manifest()["variant"]))]
    assert names[:len(expected)] == expected
    assert "forward (wall)" in result.stdout and "100.0%" in result.stdout


def test_profile_refuses_a_kernel_it_cannot_place():
    with pytest.raises(UserError, match="mystery"):
        attribute([("mystery_kernel", [], 0.1)], layers(resnet50("v1")))
    stem = layers(resnet50("v1"))[0]
    wrong_shapes = [np.zeros((1, 1, 1), np.float32), np.zeros(stem.out_shape, np.float32)]
    with pytest.raises(UserError, match="does not fit"):
        attribute([("conv2d", wrong_shapes, 0.1)], layers(resnet50("v1")))


@pytest.mark.parametrize("args, message", [
    (("bench", "--stages", "99", "--peers", "none"), "no stage '99'"),
    (("bench", "--peers", "tensorflow"), "unknown peer 'tensorflow'"),
    (("bench", "--image", "no_such_photo.png"), "no_such_photo.png: no such file"),
    (("bench.profile", "stage99_nothing"), "no stage folder stages/stage99_nothing"),
])
def test_user_mistakes_get_one_line(args, message):
    result = run(*args)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
