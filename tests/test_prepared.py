"""The prepared-weights cache (common/prepared.py) never costs a wrong answer: a pool is computed once and mapped
from disk after that; a damaged entry is prepared again with one line saying so; changed weights or another
generator mean another entry; an unwritable cache means computing at every start; a stage keeps its most recently
used entries only. On a small pool of its own."""

import json
import os

import numpy as np
import pytest

from common import prepared
from common.weights import tensor_path

NOTE = "note: "


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """(build, manifest, weights folder, generator) for a one-tensor pool, with the cache in tmp_path."""
    monkeypatch.setattr(prepared, "PREPARED_DIR", tmp_path / "prepared")
    weights = tmp_path / "weights"
    weights.mkdir()
    np.save(tensor_path("w", weights), np.arange(6, dtype=np.float32))
    generator = tmp_path / "stage0_test" / "model.py"
    generator.parent.mkdir()
    generator.write_text("# a generator\n")
    calls = []

    def build():
        calls.append(1)
        w = np.load(tensor_path("w", weights))
        return {"conv": (w.reshape(2, 3) * 2, w[:2]), "fc": w + 1}

    return build, {"tensors": {"w": {}}}, weights, generator, calls


def assert_pool(pool):
    assert np.array_equal(pool["conv"][0], np.arange(6, dtype=np.float32).reshape(2, 3) * 2)
    assert np.array_equal(pool["conv"][1], [0, 1]) and np.array_equal(pool["fc"], np.arange(1, 7))
    assert pool["fc"].flags.writeable  # numba's signatures want writable arrays


def test_computed_once_then_mapped(setup, capsys):
    build, manifest, weights, generator, calls = setup
    assert_pool(prepared.prepared_pool(build, manifest, weights, generator))
    pool = prepared.prepared_pool(build, manifest, weights, generator)
    assert_pool(pool)
    assert len(calls) == 1 and isinstance(pool["fc"], np.memmap)
    assert not capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncated arrays", "garbage arrays", "garbage index", "index beyond the file"])
def test_damaged_entry_is_prepared_again(setup, capsys, damage):
    build, manifest, weights, generator, calls = setup
    prepared.prepared_pool(build, manifest, weights, generator)
    folder = next(prepared.PREPARED_DIR.iterdir())
    arrays, index = folder / prepared.ARRAYS, folder / prepared.INDEX
    if damage == "truncated arrays":
        arrays.write_bytes(arrays.read_bytes()[:-8])
    elif damage == "garbage arrays":
        arrays.write_bytes(b"\0garbage" * (arrays.stat().st_size // 8))  # the same size
    elif damage == "garbage index":
        index.write_text("not json")
    else:
        entries = json.loads(index.read_text())
        entries["arrays"]["fc"]["parts"][0][0] = [600]
        index.write_text(json.dumps(entries))
    assert_pool(prepared.prepared_pool(build, manifest, weights, generator))
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith(NOTE)]
    assert len(notes) == 1 and "could not be read" in notes[0], notes
    assert len(calls) == 2
    assert_pool(prepared.prepared_pool(build, manifest, weights, generator))
    assert len(calls) == 2, "the damaged entry was not replaced"


def test_changed_weights_or_generator_are_another_entry(setup):
    build, manifest, weights, generator, calls = setup
    prepared.prepared_pool(build, manifest, weights, generator)
    np.save(tensor_path("w", weights), np.arange(6, dtype=np.float32))  # the same values, a new file
    prepared.prepared_pool(build, manifest, weights, generator)
    generator.write_text("# a changed generator\n")
    prepared.prepared_pool(build, manifest, weights, generator)
    assert len(calls) == 3 and len(list(prepared.PREPARED_DIR.iterdir())) == 3


def test_unwritable_cache_computes_every_time(setup, tmp_path, monkeypatch):
    build, manifest, weights, generator, calls = setup
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setattr(prepared, "PREPARED_DIR", blocker / "prepared")
    for _ in range(2):
        assert_pool(prepared.prepared_pool(build, manifest, weights, generator))
    assert len(calls) == 2


def test_a_stage_keeps_its_most_recently_used_entries(setup, monkeypatch):
    build, manifest, weights, generator, calls = setup
    monkeypatch.setattr(prepared, "KEEP_ENTRIES", 2)
    entries = []
    for edit in range(2):  # each edit of the generator is another entry
        generator.write_text(f"# edit {edit}\n")
        prepared.prepared_pool(build, manifest, weights, generator)
        entries.append(max(prepared.PREPARED_DIR.iterdir(), key=lambda f: (f / prepared.INDEX).stat().st_mtime_ns))
        os.utime(entries[-1] / prepared.INDEX, ns=(edit * 10**9, edit * 10**9))  # used long ago, edit 0 first
    generator.write_text("# edit 0\n")
    prepared.prepared_pool(build, manifest, weights, generator)  # edit 0 used again: now the most recent
    generator.write_text("# edit 2\n")
    prepared.prepared_pool(build, manifest, weights, generator)  # a third entry: the least recently used goes
    kept = sorted(prepared.PREPARED_DIR.iterdir())
    assert len(calls) == 3 and len(kept) == 2 and entries[0] in kept and entries[1] not in kept
