"""Weights as a stage prepares them, kept on disk beside its kernels, so that a warm start maps them instead of
computing them again.

From stage 5 on a stage does more with the exported tensors than read them: it transposes them into the layout
its kernels read (OHWI, [group][kh][kw][ci][BLOCK]), folds each batch norm into its conv, and from stage 10 on
multiplies the 3x3 kernels into Winograd form. For stage 11 that is 0.7 s of every start, more than the
kernels take to load. `prepared_pool` computes the pool once and keeps every array as an .npy file in
CACHE_DIR/prepared/<stage>_<digest>/; the next start maps the files into memory (np.load's mmap_mode): nothing
is read until a kernel touches it, and pages already in the operating system's file cache are not read again.

The digest covers everything the arrays are computed from: the weights' manifest (it holds every tensor's
sha256), each tensor file's size and modification time (so a file replaced behind the manifest's back is read
again, and its damage found, as without this cache), the stage's model.py and the CPU numba compiles for (the
tile, and so the packed layout, follows its vector registers: common.target). An entry that cannot be read is prepared
again, one line says so; where the cache folder cannot be written, the pool is computed at every start.
"""

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.codegen import DIGEST_CHARS, target, writable
from common.errors import say
from common.paths import CACHE_DIR
from common.target import vector_registers
from common.weights import tensor_path

PREPARED_DIR = CACHE_DIR / "prepared"
INDEX = "index.json"  # written last: an entry without it is incomplete
# Copy-on-write mapping: the arrays are writable, as numba's signatures want them, and never written back.
MAP_MODE = "c"

Pool = dict[str, np.ndarray | tuple[np.ndarray, ...]]


def entry_name(manifest: dict, weights_dir: Path, generator: Path) -> str:
    """<stage>_<digest> of what the pool is computed from. Raises OSError for a missing tensor file."""
    files = [os.stat(tensor_path(name, weights_dir)) for name in manifest["tensors"]]
    stamps = [manifest, [(f.st_size, f.st_mtime_ns) for f in files], generator.read_text(), target(),
              vector_registers()]
    return f"{generator.parent.name}_{hashlib.sha256(json.dumps(stamps).encode()).hexdigest()[:DIGEST_CHARS]}"


def save(pool: Pool, folder: Path) -> None:
    """Every array as <name>.<part>.npy, then the index of names and parts; written into a temporary folder
    and renamed, so that a reader finds all of it or nothing."""
    temporary = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        index = {}  # name -> {"tuple": is it a tuple of arrays, "parts": [[shape, dtype] of each array]}
        for name, value in pool.items():
            parts = value if isinstance(value, tuple) else (value,)
            index[name] = {"tuple": isinstance(value, tuple), "parts": [[a.shape, a.dtype.str] for a in parts]}
            for part, array in enumerate(parts):
                np.save(temporary / f"{name}.{part}.npy", array)
        (temporary / INDEX).write_text(json.dumps(index))
        os.rename(temporary, folder)
    except OSError:  # another process saved the same entry first (rename onto a full folder), or the disk is full
        shutil.rmtree(temporary, ignore_errors=True)


def load(folder: Path) -> Pool:
    """The pool save() wrote, each array mapped and checked against the shape and dtype in the index."""
    index = json.loads((folder / INDEX).read_text())
    pool = {}
    for name, entry in index.items():
        arrays = []
        for part, (shape, dtype) in enumerate(entry["parts"]):
            array = np.load(folder / f"{name}.{part}.npy", mmap_mode=MAP_MODE)
            if array.shape != tuple(shape) or array.dtype != np.dtype(dtype):
                raise ValueError(f"{name}.{part}.npy is {array.shape} {array.dtype}, the index says {shape} {dtype}")
            arrays.append(array)
        pool[name] = tuple(arrays) if entry["tuple"] else arrays[0]
    return pool


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
        except (OSError, ValueError, KeyError, TypeError) as e:  # what np.load and json raise for damaged files
            say(f"note: the prepared weights in {folder} could not be read ({e}); preparing them again")
            shutil.rmtree(folder, ignore_errors=True)
    pool = build()
    if writable(PREPARED_DIR) and not folder.exists():
        save(pool, folder)
    return pool
