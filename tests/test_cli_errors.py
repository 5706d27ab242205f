"""Every stage's command line against bad input: each bad photo gets one error line naming the file and the
reason, never a traceback; a run over a folder with bad files among good ones classifies every good file,
reports every bad one and exits with 1; --json stays valid JSON lines; wrong options exit with 2 as argparse
does. The bad files are generated here, in pytest's temporary folders.

Error paths that need no forward pass run for every stage; runs that classify photos use the fastest
(highest-numbered) stage, and stage 1 for a single photo.
"""

import io
import json
import math
import os
import runpy
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from common.errors import EXIT_FAILED as EXIT_FAILED_INPUT
from common.errors import EXIT_INTERRUPTED
from common.paths import PICS_DIR, REPO
from common.stages import FASTEST, STAGES
from tests.test_threads import THREADED

EXIT_USAGE = 2  # argparse's
RUN_TIMEOUT_S = 600
GOOD = {"cat.png": 285, "espresso.png": 967}  # picture -> its top-1 class id (Egyptian cat, espresso)
JPEG_END = b"\xff\xd9"  # the EOI marker
JUNK_BYTES = 25  # zero bytes before it: libjpeg warns and still decodes
# Root reads any file whatever its mode; without these two capabilities it obeys the permission bits.
DROP_READ_OVERRIDE = ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"]


def run_module(module: str, *args, env: dict | None = None, prefix: list[str] | tuple = ()):
    """`python -m module args` from the repository, as a user would type it; env adds to the environment."""
    return subprocess.run([*prefix, sys.executable, "-m", module, *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=RUN_TIMEOUT_S)


def run_stage(stage: str, *args, env: dict | None = None, prefix: list[str] | tuple = ()):
    return run_module(f"stages.{stage}", *args, env=env, prefix=prefix)


def assert_failed(result, code: int, *fragments: str) -> None:
    """The exit code, no traceback, and every fragment (file names, reasons) on stderr."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in:\n{result.stderr}"


def error_line(stderr: str, path: Path) -> str:
    """The one error line about path."""
    lines = [line for line in stderr.splitlines() if line.startswith(f"error: {path}: ")]
    assert len(lines) == 1, f"{path}: {len(lines)} error lines in:\n{stderr}"
    return lines[0]


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under folder with its size and modification time: equal before and after = nothing written."""
    return {str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in folder.rglob("*")}


def png_bomb(path: Path) -> None:
    """A small PNG (under 1 MB) whose header says it is just over Pillow's decompression-bomb limit, which
    is twice Image.MAX_IMAGE_PIXELS: a grayscale square of zero bytes, compressed row by row."""
    side = math.isqrt(2 * Image.MAX_IMAGE_PIXELS) + 1

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj()
    row = bytes(side + 1)  # PNG filter byte 0 (none), then one byte per pixel
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    grayscale_8bit = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", grayscale_8bit) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[Path, str]:
    """Bad inputs -> the reason their error line must give."""
    folder = tmp_path_factory.mktemp("bad")
    jpeg = (PICS_DIR / "grace_hopper.jpg").read_bytes()
    (folder / "empty.jpg").touch()
    (folder / "notes.jpg").write_text("shopping list: milk, eggs\n")
    (folder / "half.jpg").write_bytes(jpeg[:len(jpeg) // 2])
    png_bomb(folder / "bomb.png")
    (folder / "no_images").mkdir()
    (folder / "no_images" / "notes.txt").write_text("no photos here\n")
    return {
        folder / "missing.jpg": "no such file",
        folder / "no_images": "no images in this folder",
        folder / "empty.jpg": "empty file",
        folder / "notes.jpg": "cannot read image",
        folder / "half.jpg": "cannot read image",
        folder / "bomb.png": "decompression-bomb",
    }


# The loaders are common code: every stage with the default one, the fastest with OpenCV too.
@pytest.mark.parametrize(("stage", "loader"), [(stage, "pillow") for stage in STAGES] + [(FASTEST, "opencv")])
def test_every_bad_file_is_reported(stage, loader, bad_files):
    folder = next(iter(bad_files)).parent
    before = listing(folder)
    result = run_stage(stage, *bad_files, "--json", "--loader", loader)
    assert_failed(result, EXIT_FAILED_INPUT)
    for path, reason in bad_files.items():
        assert reason in error_line(result.stderr, path)
    if loader == "pillow":
        assert "truncated" in error_line(result.stderr, folder / "half.jpg")
    lines = json_lines(result.stdout)
    assert [line["image"] for line in lines] == [str(p) for p in bad_files]
    for line, reason in zip(lines, bad_files.values(), strict=True):
        assert reason in line["error"] and "top5" not in line
    assert listing(folder) == before


@pytest.fixture
def unreadable(tmp_path) -> tuple[Path, list[str]]:
    """A photo the user cannot read, and the command prefix that makes the permission bits count: tests run
    as root here, and root reads a file of mode 000 unless it gives up CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH."""
    photo = tmp_path / "locked.png"
    shutil.copy(PICS_DIR / "cat.png", photo)
    photo.chmod(0)
    if os.geteuid() != 0:
        return photo, []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv (util-linux): root reads files of any mode")
    return photo, DROP_READ_OVERRIDE


@pytest.mark.parametrize("stage", STAGES)
def test_unreadable_file(stage, unreadable):
    photo, prefix = unreadable
    result = run_stage(stage, photo, "--json", prefix=prefix)
    assert_failed(result, EXIT_FAILED_INPUT, f"error: {photo}: permission denied")
    assert json_lines(result.stdout) == [{"image": str(photo), "error": f"{photo}: permission denied; "
                                                                        "make the file readable"}]


def test_unreadable_folder(unreadable):
    photo, prefix = unreadable
    photo.parent.chmod(0)
    try:
        result = run_stage(FASTEST, photo.parent, prefix=prefix)
    finally:
        photo.parent.chmod(0o700)
    assert_failed(result, EXIT_FAILED_INPUT, f"error: {photo.parent}: permission denied; make the folder readable")
    assert str(photo) not in result.stdout


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, bad_files) -> Path:
    """Good photos among bad files, and a text file that is not looked at (no image suffix)."""
    folder = tmp_path_factory.mktemp("mixed")
    for name in GOOD:
        shutil.copy(PICS_DIR / name, folder / name)
    for path in bad_files:
        if path.is_file() and path.suffix == ".jpg":
            shutil.copy(path, folder / path.name)
    (folder / "README.txt").write_text("holiday photos\n")
    return folder


def bad_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == ".jpg")


@pytest.mark.slow
def test_mixed_folder_json(mixed_folder):
    """Every photo in folder order, a bad one in its place, though photos decode in parallel and a bad file is
    done long before a good one; the error lines on stderr in the same order."""
    before = listing(mixed_folder)
    result = run_stage(FASTEST, mixed_folder, "--json")
    assert_failed(result, EXIT_FAILED_INPUT, *(f"error: {p}:" for p in bad_in(mixed_folder)))
    in_order = [Path(line["image"]).name for line in json_lines(result.stdout)]
    assert in_order == sorted([*GOOD, *(p.name for p in bad_in(mixed_folder))])
    errors = [line.split(": ")[1] for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [str(p) for p in bad_in(mixed_folder)]
    lines = {Path(line["image"]).name: line for line in json_lines(result.stdout)}
    for name, class_id in GOOD.items():
        assert lines[name]["top5"][0]["class_id"] == class_id and "error" not in lines[name]
    for path in bad_in(mixed_folder):
        assert lines[path.name]["error"].startswith(f"{path}: ") and "top5" not in lines[path.name]
    assert listing(mixed_folder) == before


@pytest.mark.slow
def test_mixed_folder_text(mixed_folder):
    result = run_stage(FASTEST, mixed_folder)
    assert_failed(result, EXIT_FAILED_INPUT, *(f"error: {p}:" for p in bad_in(mixed_folder)))
    for name in GOOD:
        assert f"{mixed_folder / name}: " in result.stdout
    assert "Egyptian cat" in result.stdout and "espresso" in result.stdout
    assert result.stderr.count("error: ") == len(bad_in(mixed_folder))


@pytest.fixture(scope="module")
def damaged_for_opencv(tmp_path_factory) -> tuple[Path, list[str]]:
    """Files OpenCV's decoders complain about, among good photos, and how their lines on stderr start. Before
    stderr was kept to our lines, these leaked libjpeg's "Corrupt JPEG data: ...", libpng's "libpng error: ..."
    and OpenCV's "[ERROR:0@11.9] global loadsave.cpp ..." and "[ WARN:0@11.9] ..." lines."""
    folder = tmp_path_factory.mktemp("damaged")
    cat = Image.open(PICS_DIR / "cat.png").convert("RGB")
    jpeg = (PICS_DIR / "grace_hopper.jpg").read_bytes()
    (folder / "b_junk_before_end.jpg").write_bytes(jpeg[:-len(JPEG_END)] + bytes(JUNK_BYTES) + JPEG_END)
    png = encoded(cat, "PNG")
    idat = png.index(b"IDAT")  # chunk: length (4 bytes), type, data, CRC (4 bytes)
    crc_at = idat + len(b"IDAT") + struct.unpack(">I", png[idat - 4:idat])[0]
    (folder / "c_bad_crc.png").write_bytes(png[:crc_at] + bytes(b ^ 0xFF for b in png[crc_at:crc_at + 4])
                                           + png[crc_at + 4:])
    for name, kind in [("e_half.bmp", "BMP"), ("f_half.tif", "TIFF")]:
        data = encoded(cat, kind)
        (folder / name).write_bytes(data[:len(data) // 2])
    shutil.copy(PICS_DIR / "cat.png", folder / "a_good.png")
    shutil.copy(PICS_DIR / "espresso.png", folder / "d_good.png")
    return folder, [
        f"warning: {folder / 'b_junk_before_end.jpg'}: damaged data, classified as far as it decodes (the decoder "
        "says: Corrupt JPEG data: ",  # libjpeg counts the bytes its own way
        f"error: {folder / 'c_bad_crc.png'}: cannot read image (OpenCV cannot decode it: libpng error: IDAT: "
        "CRC error)",
        f"error: {folder / 'e_half.bmp'}: cannot read image (OpenCV cannot decode it)",
        f"error: {folder / 'f_half.tif'}: cannot read image (OpenCV cannot decode it)",
    ]


def encoded(img: Image.Image, kind: str) -> bytes:
    out = io.BytesIO()
    img.save(out, kind)
    return out.getvalue()


@pytest.mark.slow
def test_opencv_loader_keeps_stderr_to_our_lines(damaged_for_opencv):
    folder, said = damaged_for_opencv
    result = run_stage(FASTEST, folder, "--json", "--loader", "opencv")
    assert_failed(result, EXIT_FAILED_INPUT)
    ours = ("error: ", "warning: ", f"{FASTEST}: ", "warm-up: ")
    assert all(line.startswith(ours) for line in result.stderr.splitlines()), result.stderr
    reported = [line for line in result.stderr.splitlines() if line.startswith(("error: ", "warning: "))]
    assert len(reported) == len(said), result.stderr
    for line, start in zip(reported, said, strict=True):
        assert line.startswith(start), (line, start)
    lines = json_lines(result.stdout)
    assert [Path(line["image"]).name for line in lines] == sorted(p.name for p in folder.iterdir())
    warned = {Path(line["image"]).name: line for line in lines if "warning" in line}
    assert list(warned) == ["b_junk_before_end.jpg"] and warned["b_junk_before_end.jpg"]["top5"]


@pytest.mark.slow
def test_stage1_good_and_bad(bad_files):
    """Stage 1 reads its weights during the forward pass; a bad file after a good one still only costs that file."""
    empty = next(p for p, reason in bad_files.items() if reason == "empty file")
    result = run_stage("stage1_origin", PICS_DIR / "cat.png", empty, "--json", "--warmup", "0")
    assert_failed(result, EXIT_FAILED_INPUT, f"error: {empty}: empty file")
    good, bad = json_lines(result.stdout)
    assert good["top5"][0]["class_id"] == GOOD["cat.png"]
    assert bad == {"image": str(empty), "error": f"{empty}: empty file"}


BAD_OPTIONS = [
    (["--repeat", "0"], "--repeat"),
    (["--repeat", "many"], "--repeat"),
    (["--warmup", "-1"], "--warmup"),
    (["--warmup", "1.5"], "--warmup"),
    (["--loader", "imagemagick"], "--loader"),
    (["--fast"], "unrecognized arguments: --fast"),
]
BAD_THREADS = [(["--threads", "0"], "--threads"), (["--threads", "two"], "--threads")]


@pytest.mark.parametrize("stage", STAGES)
def test_bad_options(stage, monkeypatch, capsys):
    """In-process through the stage's own __main__ (each case in a subprocess would cost a numba import)."""
    cases = BAD_OPTIONS + (BAD_THREADS if stage in THREADED else
                           [(["--threads", "2"], "unrecognized arguments: --threads")])
    for argv, fragment in cases:
        monkeypatch.setattr(sys, "argv", [f"python -m stages.{stage}", "pics/cat.png", *argv])
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_module(f"stages.{stage}", run_name="__main__")
        out, err = capsys.readouterr()
        assert exit_info.value.code == EXIT_USAGE, argv
        assert err.startswith("usage: ") and fragment in err and out == "", (argv, err)


@pytest.mark.parametrize("stage", STAGES)
def test_bad_option_exit_code(stage):
    """The same as a real process: usage on stderr, exit code 2, nothing on stdout."""
    result = run_stage(stage, "--repeat", "0")
    assert_failed(result, EXIT_USAGE, "usage: ", "argument --repeat: 0 is below 1")
    assert result.stdout == ""


@pytest.mark.slow
def test_interrupted_run():
    """Ctrl-C between two photos of a long run: exit 130 and one line, no traceback. Stage 1 takes seconds per
    photo, so the signal lands while it works on the second one."""
    run = subprocess.Popen([sys.executable, "-m", "stages.stage1_origin", PICS_DIR, "--warmup", "0"], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first_result = ""
    while not first_result.startswith(str(PICS_DIR)) and run.poll() is None:
        first_result = run.stdout.readline()
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=RUN_TIMEOUT_S)
    assert run.returncode == EXIT_INTERRUPTED and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == "error: interrupted"
