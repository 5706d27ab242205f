"""The classic vision ops of basics/ against OpenCV on the same inputs, on every picture in pics/ and on small
synthetic images (random noise is the hardest case for a filter: every border or anchor mistake shows).

Tolerances, as basics/README.md states them:
- grey, YUV and back, mean blur, Gaussian blur: every pixel within GREY_LEVEL_TOLERANCE (1) of OpenCV's.
  OpenCV computes 8-bit images in fixed point, basics in float64, so a value near .5 may round the other way;
- Canny on the same smoothed grey image (and cv2.Canny's own no-smoothing case): at least
  CANNY_SAME_INPUT_AGREEMENT of the pixels identical and an edge-set overlap (Jaccard index: pixels both call
  edges / pixels either calls edges) of at least CANNY_SAME_INPUT_JACCARD;
- Canny with its own Gaussian step against cv2.Canny(cv2.GaussianBlur(...)): the blurred inputs already differ
  by up to 1 grey level, which moves a few edge pixels: CANNY_PIPELINE_AGREEMENT and CANNY_PIPELINE_JACCARD;
- Otsu: the same threshold and the same mask.
The measured agreement is printed (pytest -s) and recorded as test properties.
"""

import subprocess
import sys

import cv2
import numpy as np
import pytest

from basics import blur, canny, color, otsu
from basics.__main__ import main
from basics.image import read_rgb
from common.paths import REPO
from tests.conftest import PICS

GREY_LEVEL_TOLERANCE = 1
CANNY_SAME_INPUT_AGREEMENT = 0.9999
CANNY_SAME_INPUT_JACCARD = 0.999
CANNY_PIPELINE_AGREEMENT = 0.995
CANNY_PIPELINE_JACCARD = 0.95
MEAN_KSIZES = (1, 2, 3, 5, 8)  # 8x8 as in the original tutorial; even sizes test the off-centre anchor
GAUSSIANS = ((3, 0.8), (5, 1.0), (5, 1.4), (7, 2.0))  # (ksize, sigma)
CANNY_THRESHOLDS = ((50, 150), (20, 60), (100, 200), (150, 50), (49.5, 150.7))  # reversed and fractional too
SYNTHETIC_SHAPES = ((37, 53, 3), (64, 64), (3, 4), (1, 7), (2, 2, 3))
OTSU_SYNTHETIC = 30
SIDE = 48


@pytest.fixture(scope="module")
def pictures() -> dict[str, np.ndarray]:
    return {p.name: read_rgb(p) for p in PICS}


def noise(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def shapes_image(seed=0) -> np.ndarray:
    """HW uint8: a bright rectangle and a dark disc on a mid-grey, noisy background: edges in every direction."""
    rows, cols = np.mgrid[:SIDE, :SIDE]
    image = np.full((SIDE, SIDE), 120.0)
    image[8:30, 6:26] = 220
    image[(rows - 32) ** 2 + (cols - 33) ** 2 < 11**2] = 30
    image += np.random.default_rng(seed).normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def within(ours: np.ndarray, theirs: np.ndarray) -> tuple[int, float]:
    """(largest |difference| in grey levels, share of identical values); the shapes must match."""
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == np.uint8
    return int(np.abs(ours.astype(np.int16) - theirs).max()), float(np.mean(ours == theirs))


def edge_agreement(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, float]:
    """(share of pixels on which both maps agree, Jaccard index of the two edge sets)"""
    assert set(np.unique(ours)) <= {0, 255}
    ours, theirs = ours > 0, theirs > 0
    either = np.sum(ours | theirs)
    jaccard = float(np.sum(ours & theirs) / either) if either else 1.0
    return float(np.mean(ours == theirs)), jaccard


def check_grey_levels(name: str, ours: np.ndarray, theirs: np.ndarray, worst: dict | None):
    """Assert the tolerance; in `worst` (pictures only: tiny noise images would say little) keep the
    smallest share of identical values seen for `name`."""
    diff, same = within(ours, theirs)
    assert diff <= GREY_LEVEL_TOLERANCE, f"{name}: differs from OpenCV by up to {diff} grey levels"
    if worst is not None:
        worst[name] = min(worst.get(name, 1.0), same)


def report(record_property, title: str, values: dict):
    for key, value in values.items():
        record_property(key, value)
    print(f"\n{title}: " + ", ".join(f"{k} {v:.4%}" for k, v in values.items()))


def test_color_matches_opencv(pictures, record_property):
    worst = {}
    images = {**pictures, "noise": noise((37, 53, 3))}
    for name, rgb in images.items():
        record = worst if name in pictures else None
        check_grey_levels("gray", color.gray(rgb), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), record)
        yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV)
        check_grey_levels("rgb_to_yuv", color.rgb_to_yuv(rgb), yuv, record)
        check_grey_levels("yuv_to_rgb", color.yuv_to_rgb(yuv), cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB), record)
    report(record_property, "identical to OpenCV, worst picture", worst)


def test_grey_pixels_stay_grey():
    levels = np.arange(256, dtype=np.uint8)
    rgb = np.stack([levels] * 3, axis=-1)[None]  # (1, 256, 3): every grey
    assert np.array_equal(color.gray(rgb)[0], levels)
    yuv = color.rgb_to_yuv(rgb)[0]
    assert np.array_equal(yuv[:, 0], levels) and np.all(yuv[:, 1:] == color.CHROMA_OFFSET)


def test_blurs_match_opencv(pictures, record_property):
    worst = {}
    images = {**pictures, **{f"noise{shape}": noise(shape) for shape in SYNTHETIC_SHAPES}}
    for name, rgb in images.items():
        record = worst if name in pictures else None
        for k in MEAN_KSIZES:
            check_grey_levels(f"mean {k}x{k}", blur.mean_blur(rgb, k), cv2.blur(rgb, (k, k)), record)
        for k, sigma in GAUSSIANS:
            check_grey_levels(f"gaussian {k}x{k} sigma {sigma}", blur.gaussian_blur(rgb, k, sigma),
                              cv2.GaussianBlur(rgb, (k, k), sigma), record)
    report(record_property, "identical to OpenCV, worst picture", worst)


def test_gaussian_kernel_matches_opencv():
    for k, sigma in GAUSSIANS:
        ours = blur.gaussian_kernel(k, sigma)
        assert ours.sum() == pytest.approx(1.0)
        np.testing.assert_allclose(ours, cv2.getGaussianKernel(k, sigma)[:, 0], rtol=1e-6)


def test_bad_blur_parameters():
    image = noise((5, 5))
    for bad in (lambda: blur.mean_blur(image, 0), lambda: blur.gaussian_blur(image, 4, 1.0),
                lambda: blur.gaussian_blur(image, 5, 0.0)):
        with pytest.raises(ValueError):
            bad()


def test_canny_on_the_same_input_matches_opencv(pictures, record_property):
    """Steps 2-5 against cv2.Canny on identical grey input (cv2.Canny does no smoothing itself)."""
    worst_agreement, worst_jaccard = 1.0, 1.0
    inputs = {name: cv2.GaussianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (5, 5), 1.4)
              for name, rgb in pictures.items()}
    inputs |= {name + " unsmoothed": cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) for name, rgb in pictures.items()}
    inputs |= {"shapes": shapes_image(), "noise": noise((40, 60))}
    for name, gray in inputs.items():
        for low, high in CANNY_THRESHOLDS:
            ours = canny.canny_from_smoothed(gray, low, high)
            agreement, jaccard = edge_agreement(ours, cv2.Canny(gray, low, high))
            assert agreement >= CANNY_SAME_INPUT_AGREEMENT, f"{name} {low}/{high}: {agreement:.4%} of pixels agree"
            assert jaccard >= CANNY_SAME_INPUT_JACCARD, f"{name} {low}/{high}: edge sets overlap {jaccard:.4f}"
            worst_agreement, worst_jaccard = min(worst_agreement, agreement), min(worst_jaccard, jaccard)
    assert np.array_equal(canny.canny(inputs["shapes"], sigma=0), cv2.Canny(inputs["shapes"], canny.LOW, canny.HIGH))
    report(record_property, "Canny vs cv2.Canny on the same input, worst",
           {"canny_same_input_pixels": worst_agreement, "canny_same_input_jaccard": worst_jaccard})


def test_canny_pipeline_matches_opencv(pictures, record_property):
    """Our smoothing + Canny against cv2.GaussianBlur + cv2.Canny, both from the same grey image."""
    worst_agreement, worst_jaccard = 1.0, 1.0
    for name, rgb in pictures.items():
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        theirs = cv2.Canny(cv2.GaussianBlur(gray, (canny.SMOOTH_KSIZE,) * 2, canny.SMOOTH_SIGMA), canny.LOW, canny.HIGH)
        agreement, jaccard = edge_agreement(canny.canny(gray), theirs)
        assert agreement >= CANNY_PIPELINE_AGREEMENT, f"{name}: {agreement:.4%} of pixels agree"
        assert jaccard >= CANNY_PIPELINE_JACCARD, f"{name}: edge sets overlap {jaccard:.4f}"
        worst_agreement, worst_jaccard = min(worst_agreement, agreement), min(worst_jaccard, jaccard)
    report(record_property, "Canny pipeline vs OpenCV's, worst picture",
           {"canny_pipeline_pixels": worst_agreement, "canny_pipeline_jaccard": worst_jaccard})


def test_canny_finds_the_shapes():
    """Independent of OpenCV: the rectangle's sides are edges, the flat background far from them is not."""
    edges = canny.canny(shapes_image())
    assert edges[8:30, 5:8].any(axis=1).all()  # the left side of the rectangle, on every row it spans
    assert not edges[40:, :12].any()  # a corner of plain background


def test_otsu_matches_opencv(pictures):
    rng = np.random.default_rng(0)
    images = {name: color.gray(rgb) for name, rgb in pictures.items()}
    for i in range(OTSU_SYNTHETIC):
        dark, light = rng.integers(0, 120), rng.integers(130, 256)
        share = rng.uniform(0.05, 0.95)
        images[f"bimodal {i}"] = np.where(rng.random((30, 40)) < share, rng.normal(dark, 12, (30, 40)),
                                          rng.normal(light, 12, (30, 40))).clip(0, 255).astype(np.uint8)
        levels = rng.choice(256, size=3, replace=False).astype(np.uint8)  # a histogram with many empty bins
        images[f"three levels {i}"] = rng.choice(levels, (30, 40))
    images["one colour"] = np.full((10, 10), 77, np.uint8)
    images["shapes"] = shapes_image()
    for name, gray in images.items():
        mask, t = otsu.otsu(gray)
        cv_t, cv_mask = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
        assert t == int(cv_t), f"{name}: threshold {t}, OpenCV {cv_t}"
        assert np.array_equal(mask, cv_mask), name


def test_otsu_separates_two_levels():
    gray = np.array([[10, 10, 200], [200, 10, 200]], np.uint8)
    mask, t = otsu.otsu(gray)
    assert 10 <= t < 200
    assert np.array_equal(mask, np.where(gray == 200, 255, 0))


@pytest.mark.parametrize("op", ["gray", "yuv", "mean-blur", "gaussian-blur", "canny", "otsu"])
def test_command_line_ops(op, tmp_path, capsys):
    picture = PICS[0]
    out = tmp_path / f"{op}.png"
    assert main([op, str(picture), "-o", str(out)]) == 0
    written = read_rgb(out)[..., 0]  # every output is grey; read_rgb gives it as RGB
    rgb = read_rgb(picture)
    expected = {"gray": lambda: color.gray(rgb), "canny": lambda: canny.canny(rgb), "otsu": lambda: otsu.otsu(rgb)[0],
                "yuv": lambda: np.concatenate([color.rgb_to_yuv(rgb)[..., i] for i in range(3)], axis=1),
                "mean-blur": lambda: blur.mean_blur(rgb, 5), "gaussian-blur": lambda: blur.gaussian_blur(rgb, 5, 1.0)}
    if op.endswith("blur"):
        assert np.array_equal(read_rgb(out), expected[op]())
    else:
        assert np.array_equal(written, expected[op]())
    assert str(out) in capsys.readouterr().out


def test_command_line_options_and_figures(tmp_path):
    picture = str(PICS[0])
    assert main(["canny", picture, "-o", str(tmp_path / "c.png"), "--low", "20", "--high", "60", "--sigma", "0"]) == 0
    gray = color.gray(read_rgb(picture))
    assert np.array_equal(read_rgb(tmp_path / "c.png")[..., 0], canny.canny_from_smoothed(gray, 20, 60))
    assert main(["gaussian-blur", picture, "-o", str(tmp_path / "g.png"), "--ksize", "7", "--sigma", "2",
                 "--figure", str(tmp_path / "kernel.png")]) == 0
    assert main(["otsu", picture, "-o", str(tmp_path / "o.png"), "--figure", str(tmp_path / "hist.png")]) == 0
    assert main(["mean-blur", picture, "-o", str(tmp_path / "m.png"), "--ksize", "8", "--noise", "0.1"]) == 0
    for name in ("kernel.png", "hist.png", "m.png"):
        assert read_rgb(tmp_path / name).size > 0
    for bad in (["gaussian-blur", picture, "--ksize", "4"], ["mean-blur", picture, "--ksize", "0"],
                ["canny", picture, "--sigma", "-1"], ["mean-blur", picture, "--noise", "2"], ["sharpen", picture]):
        with pytest.raises(SystemExit) as exit_info:
            main(bad)
        assert exit_info.value.code == 2


def test_all_writes_every_output(tmp_path, capsys):
    assert main(["all", str(PICS[0]), "-o", str(tmp_path)]) == 0
    expected = {"gray", "yuv", "salt_and_pepper", "mean_blur", "gaussian_blur", "canny", "otsu",
                "gaussian_kernel", "otsu_histogram", "contact_sheet"}
    assert {p.stem for p in tmp_path.glob("*.png")} == expected
    assert np.array_equal(read_rgb(tmp_path / "canny.png")[..., 0], canny.canny(read_rgb(PICS[0])))


def test_bad_paths_give_one_line_errors(tmp_path, capsys):
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("not a picture")
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    cases = {
        "no such file": ["gray", str(tmp_path / "missing.png")],
        "is a directory": ["canny", str(tmp_path)],
        "not an image": ["otsu", str(not_an_image)],
        "cannot write": ["gray", str(PICS[0]), "-o", str(blocked / "out.png")],  # a file where a folder should be
    }
    for words, argv in cases.items():
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and words in err, err


@pytest.mark.slow
def test_module_exit_code_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "basics", "canny", str(tmp_path / "missing.jpg")],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr and "missing.jpg" in result.stderr
