"""The tuning cache (common/tuning.py) never costs a wrong choice or a traceback: a stage is tuned once and loads its
choices after that; a damaged choice file is tuned again with one line saying so; another CPU gets a choice file of
its own; a cache folder that cannot be written means tuning in memory, with one line saying so; the prepared weights
follow the choices they were packed for.

On a toy stage, so that nothing compiles: a generator file of its own, two layer shapes, and a "forward pass" of one
call per shape, plain Python functions of known cost (each shape's first candidate sleeps, its second does not), so
the right choice is known. The stage's own candidate tiles are checked against the register files they come from.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import numba
import numpy as np
import pytest

from common import codegen, prepared, tuning
from common.paths import REPO
from common.target import AVX2_TARGET
from common.weights import tensor_path
from tests.test_cli_errors import DROP_READ_OVERRIDE, RUN_TIMEOUT_S

NOTE = "note: "
READ_ONLY = 0o555
SLOW_S = 0.002  # what the slow candidates take: far above the timer's resolution and any noise of a call
CANDIDATES = {"shape a": [[1], [2]], "shape b": [[3], [4]]}  # the first of each is slow: the second must win
FASTEST = {"shape a": [2], "shape b": [4]}
TOY_SCRIPT = "import json, sys; from tests.test_tuning import toy_tuned; print(json.dumps(toy_tuned(sys.argv[1])))"


def toy_tuned(generator: str, compiled: list | None = None) -> dict:
    """tuned() for the toy stage whose model.py is `generator`: {"choices", "said", "path"}."""
    def network(choices):  # each kernel is named after its shape, as the stage's are
        return [(f"{shape} {'slow' if choice == CANDIDATES[shape][0] else 'fast'}", ()) for shape, choice in
                choices.items()]

    def compile_trials():
        if compiled is not None:
            compiled.append(1)
        kernels = {f"{shape} slow": lambda: time.sleep(SLOW_S) for shape in CANDIDATES}
        return types.SimpleNamespace(**kernels, **{f"{shape} fast": lambda: None for shape in CANDIDATES})

    choices, said = tuning.tuned(Path(generator), CANDIDATES, network, compile_trials, lambda c: f"option {c[0]}")
    return {"choices": choices, "said": said, "path": str(tuning.choice_path(Path(generator), CANDIDATES))}


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """(the toy stage's model.py, the kernel cache folder), both in tmp_path."""
    monkeypatch.setattr(codegen, "KERNELS_DIR", tmp_path / "cache" / "kernels")
    generator = tmp_path / "stage0_toy" / "model.py"
    generator.parent.mkdir()
    generator.write_text("# a toy generator\n")
    return generator, codegen.KERNELS_DIR


def notes(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(NOTE)]


def run_toy(generator: Path, cache: Path, env: dict | None = None, prefix: list[str] | tuple = ()):
    """toy_tuned in a process of its own, as a stage would run with RESNET_CACHE_DIR=cache."""
    return subprocess.run([*prefix, sys.executable, "-c", TOY_SCRIPT, str(generator)], cwd=REPO, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S,
                          env={**os.environ, "RESNET_CACHE_DIR": str(cache), **(env or {})})


def test_tuned_once_then_loaded(toy, capsys):
    generator, kernels = toy
    compiled = []
    first = toy_tuned(generator, compiled)
    rounds = len(compiled)  # one compile per round of candidates with kernels of their own
    assert first["choices"] == FASTEST and first["said"].startswith(f"tuned {len(CANDIDATES)} shapes in ")
    err = capsys.readouterr().err
    assert [line.split(":")[0] for line in err.splitlines()] == ["tuning 1/2 shape a", "tuning 2/2 shape b"]
    assert Path(first["path"]).parent == kernels and Path(first["path"]).is_file()
    second = toy_tuned(generator, compiled)
    assert second["choices"] == FASTEST and second["said"] == "loaded tuning"
    assert rounds and len(compiled) == rounds and not capsys.readouterr().err


@pytest.mark.parametrize("damage", ["garbage", "truncated", "a choice it does not offer", "a shape missing"])
def test_damaged_choice_file_is_tuned_again(toy, capsys, damage):
    generator, _ = toy
    path = Path(toy_tuned(generator)["path"])
    text = path.read_text()
    data = json.loads(text)
    if damage == "garbage":
        path.write_bytes(b"\x00\xff" * 8)
    elif damage == "truncated":
        path.write_text(text[: len(text) // 2])
    elif damage == "a choice it does not offer":
        path.write_text(json.dumps({**data, "choices": {**data["choices"], "shape a": [9]}}))
    else:
        path.write_text(json.dumps({**data, "choices": {"shape a": [2]}}))
    capsys.readouterr()
    compiled = []
    again = toy_tuned(generator, compiled)
    err = capsys.readouterr().err
    assert len(notes(err)) == 1 and "tuning again" in notes(err)[0], err
    assert again["choices"] == FASTEST and again["said"].startswith("tuned ") and compiled
    assert json.loads(path.read_text())["choices"] == FASTEST, "the damaged file should have been replaced"


def test_candidates_beyond_the_time_budget_are_left_untried(toy, capsys, monkeypatch):
    """With no time left after round 0 (each shape's first candidate), the first candidates are kept."""
    generator, _ = toy
    monkeypatch.setattr(tuning, "TUNING_SECONDS", 0)
    tuned = toy_tuned(generator)
    assert tuned["choices"] == {shape: options[0] for shape, options in CANDIDATES.items()}
    assert f"{len(CANDIDATES)} candidates left untried" in capsys.readouterr().err


def test_unoptimised_code_is_not_timed(toy, monkeypatch):
    """NUMBA_OPT=0 (the AArch64 check of tests/test_portable_tiles.py compiles so): the untuned choices, no file."""
    generator, kernels = toy
    monkeypatch.setattr(numba.config, "OPT", 0)
    untuned = toy_tuned(generator)
    assert untuned["choices"] == {shape: options[0] for shape, options in CANDIDATES.items()}
    assert untuned["said"].startswith("untuned") and not kernels.exists()


def test_another_cpu_has_its_own_choice_file(toy):
    """The same toy stage tuned for an AVX2-only CPU (common.target.AVX2_TARGET), then natively: two files."""
    generator, kernels = toy
    avx2 = run_toy(generator, kernels.parent, env=AVX2_TARGET)
    assert avx2.returncode == 0, avx2.stderr
    avx2 = json.loads(avx2.stdout.splitlines()[-1])
    assert avx2["said"].startswith("tuned ")
    native = toy_tuned(generator)
    assert native["said"].startswith("tuned "), "the AVX2 CPU's choices were taken for this CPU's"
    assert native["path"] != avx2["path"] and {Path(avx2["path"]), Path(native["path"])} <= set(kernels.iterdir())


def test_read_only_cache_folder_tunes_in_memory(toy):
    generator, kernels = toy
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv (util-linux): root writes into folders of any mode")
    kernels.mkdir(parents=True)
    kernels.chmod(READ_ONLY)
    try:
        result = run_toy(generator, kernels.parent, prefix=DROP_READ_OVERRIDE if os.geteuid() == 0 else ())
    finally:
        kernels.chmod(0o755)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["choices"] == FASTEST
    assert len(notes(result.stderr)) == 1 and "cannot be written" in notes(result.stderr)[0], result.stderr
    assert not list(kernels.iterdir()), "nothing should have been written into the read-only folder"


def test_prepared_weights_follow_the_choices(tmp_path, monkeypatch):
    """Weights packed for one choice are not used for another: the stage was tuned again since they were kept."""
    monkeypatch.setattr(prepared, "PREPARED_DIR", tmp_path / "prepared")
    weights = tmp_path / "weights"
    weights.mkdir()
    np.save(tensor_path("w", weights), np.arange(4, dtype=np.float32))
    generator = tmp_path / "stage0_toy" / "model.py"
    generator.parent.mkdir()
    generator.write_text("# a toy generator\n")
    builds = []

    def pool_for(choices):
        def build():
            builds.append(choices)
            return {"w": np.full(4, choices["shape a"][0], np.float32)}

        return tuning.prepared_for(choices, build, {"tensors": {"w": {}}}, weights, generator)

    for choices, packed in [({"shape a": [1]}, 1), ({"shape a": [1]}, 1), ({"shape a": [2]}, 2), ({"shape a": [1]}, 3)]:
        assert np.array_equal(pool_for(choices)["w"], np.full(4, choices["shape a"][0])) and len(builds) == packed


def test_each_call_counts_for_its_shape_and_the_shape_before_it():
    """A kernel's time counts for the shape in its name (the longest that fits), and for the shape of the call
    before it, whose output it reads."""
    calls = [("conv_56x64_k1_a", ()), ("conv_56x64_k1_b", ()), ("conv_56x64_k13", ()), ("pool", ())]
    assert tuning.credits(calls, ["56x64_k1", "56x64_k13"]) == [{"56x64_k1"}, {"56x64_k1"},
                                                                {"56x64_k13", "56x64_k1"}, {"56x64_k13"}]


def test_stage_tiles_fit_the_register_file():
    """Stage 12's candidate tiles, derived from the vector registers: sums + weight vectors + a broadcast fit."""
    from stages.stage12_tuned.model import register_tiles

    assert register_tiles(32, 16) == [(7, 32), (14, 32)]  # AVX-512
    assert register_tiles(16, 8) == [(7, 8), (14, 8)]  # AVX2
    for registers, lanes in [(32, 16), (16, 8), (32, 4)]:
        for rows, channels in register_tiles(registers, lanes):
            assert rows * (channels // lanes) + channels // lanes + 1 <= registers


def test_stage_candidates_start_with_stage_11s_tile_and_split_their_layer():
    """Round 0 is stage 11's tile everywhere; a 14-row tile only where 14 divides a row of output pixels or the
    Winograd tiles: 13 of the 20 shapes of the v1 network, none of layer 4 (7x7 outputs)."""
    from common.architecture import resnet50
    from common.tiles import BLOCK, ROWS
    from stages.stage12_tuned.model import candidates, shape_name, winograd_tile

    shapes = {shape_name(conv): conv for conv in resnet50("v1").convs}
    for conv in shapes.values():
        options = candidates(conv)
        assert options[0] == (ROWS, BLOCK)
        m = winograd_tile(conv)
        assert all(((conv.out_size // m) ** 2 if m else conv.out_size) % rows == 0 for rows, _ in options)
    assert sum(len(candidates(conv)) > 1 for conv in shapes.values()) == 13
    assert all(len(candidates(conv)) == 1 for conv in shapes.values() if conv.out_size == 7)


def test_tune_command_refuses_a_stage_that_does_not_tune():
    result = subprocess.run([sys.executable, "-m", "common.tuning", "5"], cwd=REPO, capture_output=True, text=True,
                            timeout=RUN_TIMEOUT_S)
    assert result.returncode == 1 and "does not tune itself" in result.stderr, result.stderr


def test_each_network_of_layer_shapes_keeps_a_choice_file_of_its_own(toy):
    """v1 and v1.5 weights give the same stage other layer shapes: tuning one must not overwrite the other's choices
    (the test suite runs both, and `make run` would tune again after it)."""
    generator, _ = toy
    other = {f"{shape}_v15": options for shape, options in CANDIDATES.items()}
    assert tuning.choice_path(Path(generator), CANDIDATES) != tuning.choice_path(Path(generator), other)
    assert tuning.choice_path(Path(generator), CANDIDATES) == tuning.choice_path(Path(generator), dict(CANDIDATES))
