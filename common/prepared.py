"""Weights as a stage prepares them, kept on disk beside its kernels, so that a warm start maps them instead of
computing them again.

From stage 5 on a stage does more with the exported tensors than read them: it transposes them into the layout
its kernels read (OHWI, [group][kh][kw][ci][BLOCK]), folds each batch norm into its conv, and from stage 10 on
multiplies the 3x3 kernels into Winograd form. For stage 11 that is 0.7 s of every start, more than the
kernels take to load. `prepared_pool` computes the pool once and keeps every array in one file,
CACHE_DIR/prepared/<stage>_<digest>/arrays.bin, beside an index of each array's shape, type and place; the
next start maps that file into memory (np.memmap) and views the arrays in it: nothing is read until a kernel
touches it, and pages already in the operating system's file cache are not read again. (One file rather than an
.npy per array: mapping 109 files took stage 11 20-40 ms, mapping one takes 1 ms.)

The digest covers everything the arrays are computed from: the weights' manifest (it holds every tensor's
sha256), each tensor file's size and modification time (so a file replaced behind the manifest's back is read
again, and its damage found, as without this cache), the stage's model.py with the shared modules it packs with
(common.codegen.generator_source) and the CPU numba compiles for (the tile, and so the packed layout, follows its
vector registers: common.target). An entry that cannot be read is prepared again, one line says so; where the cache
folder cannot be written, the pool is computed at every start. A stage keeps its KEEP_ENTRIES most recently used
entries (each variant of the weights and each CPU target is one; an edit of model.py makes another): older ones are
deleted when a new one is saved.
"""

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.codegen import DIGEST_CHARS, generator_source, writable
from common.errors import say
from common.paths import CACHE_DIR
from common.target import numba_target, vector_registers
from common.weights import tensor_path

PREPARED_DIR = CACHE_DIR / "prepared"
INDEX = "index.json"  # written last: an entry without it is incomplete
ARRAYS = "arrays.bin"
MAGIC = b"ResNet-50 prepared weights\n"  # the file's first bytes: a file overwritten with anything else is found
ALIGN = 64  # bytes: every array starts on a cache line, as a fresh numpy array of this size would
KEEP_ENTRIES = 4  # per stage: v1 and v1.5 weights for this CPU, the AVX2 build the tests run, one spare
FORMAT = 2  # of the files: part of every entry's name, so that entries of another format are other entries
# Copy-on-write mapping: the arrays are writable, as numba's signatures want them, and never written back.
MAP_MODE = "c"

Pool = dict[str, np.ndarray | tuple[np.ndarray, ...]]


def entry_name(manifest: dict, weights_dir: Path, generator: Path) -> str:
    """<stage>_<digest> of what the pool is computed from. Raises OSError for a missing tensor file."""
    files = [os.stat(tensor_path(name, weights_dir)) for name in manifest["tensors"]]
    stamps = [FORMAT, manifest, [(f.st_size, f.st_mtime_ns) for f in files], generator_source(generator),
              numba_target(), vector_registers()]
    return f"{generator.parent.name}_{hashlib.sha256(json.dumps(stamps).encode()).hexdigest()[:DIGEST_CHARS]}"


def aligned(offset: int) -> int:
    return -(-offset // ALIGN) * ALIGN


def save(pool: Pool, folder: Path) -> None:
    """MAGIC and every array, each at an ALIGN-byte offset, into ARRAYS, then the index: the file's size and, by
    name, whether the value is a tuple and [shape, dtype, offset] of each of its arrays. Written into a temporary
    folder and renamed, so that a reader finds all of it or nothing."""
    temporary = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        index = {}
        with open(temporary / ARRAYS, "wb") as f:
            f.write(MAGIC)
            for name, value in pool.items():
                parts = value if isinstance(value, tuple) else (value,)
                index[name] = {"tuple": isinstance(value, tuple), "parts": []}
                for array in parts:
                    f.seek(aligned(f.tell()))
                    index[name]["parts"].append([array.shape, array.dtype.str, f.tell()])
                    f.write(np.ascontiguousarray(array).data)
            size = f.tell()
        (temporary / INDEX).write_text(json.dumps({"size": size, "arrays": index}))
        os.rename(temporary, folder)
    except OSError:  # another process saved the same entry first (rename onto a full folder), or the disk is full
        shutil.rmtree(temporary, ignore_errors=True)
        return
    prune(folder)


def load(folder: Path) -> Pool:
    """The pool save() wrote: ARRAYS mapped once, each array a view into it, checked against the index. Marks the
    entry as used now (its index's modification time), for prune()."""
    index = json.loads((folder / INDEX).read_text())
    data = np.memmap(folder / ARRAYS, mode=MAP_MODE)
    if data.size != index["size"] or bytes(data[:len(MAGIC)]) != MAGIC:
        raise ValueError(f"{ARRAYS} is {data.size} bytes starting {bytes(data[:len(MAGIC)])!r}, the index says "
                         f"{index['size']} bytes starting {MAGIC!r}")
    pool = {}
    for name, entry in index["arrays"].items():
        arrays = []
        for shape, dtype, offset in entry["parts"]:
            dtype = np.dtype(dtype)
            end = offset + dtype.itemsize * int(np.prod(shape))
            if offset % ALIGN or end > data.size:
                raise ValueError(f"{name}: bytes {offset}-{end} of a {data.size}-byte file")
            arrays.append(data[offset:end].view(dtype).reshape(shape))
        pool[name] = tuple(arrays) if entry["tuple"] else arrays[0]
    with contextlib.suppress(OSError):  # a read-only cache is still read
        os.utime(folder / INDEX)
    return pool


def prune(folder: Path) -> None:
    """Delete the entries of folder's stage beyond its KEEP_ENTRIES most recently used. Kernels still running on
    a deleted entry's arrays are not disturbed: the operating system keeps a mapped file until it is unmapped."""
    stage = folder.name.rsplit("_", 1)[0]
    entries = sorted(((used(f), f) for f in folder.parent.glob(f"{stage}_*") if f.is_dir()), reverse=True)
    for _, old in entries[KEEP_ENTRIES:]:
        shutil.rmtree(old, ignore_errors=True)


def used(entry: Path) -> int:
    """When the entry was last saved or loaded (nanoseconds), 0 for an incomplete one."""
    try:
        return (entry / INDEX).stat().st_mtime_ns
    except OSError:
        return 0


def prepared_pool(build: Callable[[], Pool], manifest: dict, weights_dir: Path, generator: Path) -> Pool:
    """The pool `build()` computes from the weights in weights_dir for the stage whose model.py is `generator`:
    mapped from the cache if it holds it, else computed and kept there."""
    try:
        folder = PREPARED_DIR / entry_name(manifest, weights_dir, generator)
    except OSError:
        return build()  # a tensor file is missing: build() reports it as reading the weights does
    if (folder / INDEX).is_file():
        try:
            return load(folder)
        except (OSError, ValueError, KeyError, TypeError) as e:  # what np.memmap and json raise for damaged files
            say(f"note: the prepared weights in {folder} could not be read ({e}); preparing them again")
            shutil.rmtree(folder, ignore_errors=True)
    pool = build()
    if writable(PREPARED_DIR) and not folder.exists():
        save(pool, folder)
    return pool
