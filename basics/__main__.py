"""The command line of the classic vision ops:

    python -m basics OP IMAGE [-o OUT.png] [options]    OP: gray, yuv, mean-blur, gaussian-blur, canny, otsu
    python -m basics all IMAGE [-o DIR]                  every op with its defaults, the figures, a contact sheet

`python -m basics OP --help` lists an op's options. A bad input or output path is reported in one line
and the exit code is 1; usage mistakes exit with 2, as argparse does.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from basics import blur, canny, color, figures, otsu
from basics.image import read_rgb, write_png
from common.cli import positive_int
from common.errors import run_reporting_errors

OUT_DIR = Path("out/basics")
MEAN_KSIZE = 5
GAUSSIAN_KSIZE, GAUSSIAN_SIGMA = 5, 1.0
NOISE_IN_ALL = 0.05  # `all` blurs a copy with 5% salt-and-pepper noise: what a mean blur is for


def _float_at_least(text: str, low: float, strict: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < low or (strict and value == low):
        raise argparse.ArgumentTypeError(f"{value:g} must be {'above' if strict else 'at least'} {low:g}")
    return value


def odd_positive_int(text: str) -> int:
    value = positive_int(text)
    if value % 2 == 0:
        raise argparse.ArgumentTypeError(f"{value} must be odd: the kernel needs a centre pixel")
    return value


def positive_float(text: str) -> float:
    return _float_at_least(text, 0.0, strict=True)


def non_negative_float(text: str) -> float:
    return _float_at_least(text, 0.0, strict=False)


def fraction(text: str) -> float:
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{value:g} must be at most 1")
    return value


def yuv_strip(rgb: np.ndarray) -> np.ndarray:
    """The Y, U and V planes side by side, HW(3W) uint8: brightness, then the blue and red differences."""
    yuv = color.rgb_to_yuv(rgb)
    return np.concatenate([yuv[..., 0], yuv[..., 1], yuv[..., 2]], axis=1)


def run_gray(args) -> str:
    write_png(args.out, color.gray(read_rgb(args.image)))
    return "grey, BT.601 weights"


def run_yuv(args) -> str:
    write_png(args.out, yuv_strip(read_rgb(args.image)))
    return "Y | U | V planes side by side"


def run_mean_blur(args) -> str:
    image = read_rgb(args.image)
    if args.noise:
        image = blur.salt_and_pepper(image, args.noise)
    write_png(args.out, blur.mean_blur(image, args.ksize))
    noisy = f" of {args.noise:.0%} salt-and-pepper noise" if args.noise else ""
    return f"mean blur {args.ksize}x{args.ksize}{noisy}"


def run_gaussian_blur(args) -> str:
    write_png(args.out, blur.gaussian_blur(read_rgb(args.image), args.ksize, args.sigma))
    if args.figure:
        figures.gaussian_kernel_figure(blur.gaussian_kernel(args.ksize, args.sigma), args.sigma, args.figure)
    return f"Gaussian blur {args.ksize}x{args.ksize}, sigma {args.sigma:g}"


def run_canny(args) -> str:
    edges = canny.canny(read_rgb(args.image), args.low, args.high, args.ksize, args.sigma)
    write_png(args.out, edges)
    smoothing = f"Gaussian {args.ksize}x{args.ksize} sigma {args.sigma:g}" if args.sigma else "no smoothing"
    return f"Canny {args.low:g}/{args.high:g}, {smoothing}: {np.mean(edges > 0):.1%} of pixels are edges"


def run_otsu(args) -> str:
    gray = color.as_gray(read_rgb(args.image))
    mask, t = otsu.otsu(gray)
    write_png(args.out, mask)
    if args.figure:
        counts = otsu.histogram(gray)
        figures.otsu_figure(counts, otsu.between_class_variance(counts), t, args.figure)
    return f"Otsu threshold {t}: {np.mean(mask > 0):.1%} of pixels are foreground"


def run_all(args) -> str:
    """Every op with its defaults on one picture; the outputs, the two figures and a contact sheet in args.out."""
    rgb = read_rgb(args.image)
    out = Path(args.out)
    gray = color.gray(rgb)
    yuv = color.rgb_to_yuv(rgb)
    noisy = blur.salt_and_pepper(rgb, NOISE_IN_ALL)
    mask, t = otsu.otsu(gray)
    outputs = {  # file name: (contact-sheet title, HW or HWC uint8 image)
        "gray": ("grey (BT.601)", gray),
        "yuv": ("YUV: Y | U | V", yuv_strip(rgb)),
        "salt_and_pepper": (f"{NOISE_IN_ALL:.0%} salt and pepper", noisy),
        "mean_blur": (f"mean blur {MEAN_KSIZE}x{MEAN_KSIZE} of the noisy copy", blur.mean_blur(noisy, MEAN_KSIZE)),
        "gaussian_blur": (f"Gaussian blur {GAUSSIAN_KSIZE}x{GAUSSIAN_KSIZE}, sigma {GAUSSIAN_SIGMA:g}",
                          blur.gaussian_blur(rgb, GAUSSIAN_KSIZE, GAUSSIAN_SIGMA)),
        "canny": (f"Canny {canny.LOW}/{canny.HIGH}", canny.canny(rgb)),
        "otsu": (f"Otsu, t = {t}", mask),
    }
    for name, (_, image) in outputs.items():
        write_png(out / f"{name}.png", image)
    figures.gaussian_kernel_figure(blur.gaussian_kernel(GAUSSIAN_KSIZE, GAUSSIAN_SIGMA), GAUSSIAN_SIGMA,
                                   out / "gaussian_kernel.png")
    counts = otsu.histogram(gray)
    figures.otsu_figure(counts, otsu.between_class_variance(counts), t, out / "otsu_histogram.png")
    # On the sheet the three YUV planes get a panel each; the strip would be too small to read.
    planes = [(f"YUV: {name}", yuv[..., i]) for i, name in enumerate("YUV")]
    panels = [("input", rgb), outputs["gray"], *planes, *(v for k, v in outputs.items() if k not in ("gray", "yuv"))]
    figures.contact_sheet(panels, out / "contact_sheet.png")
    return f"{len(outputs)} outputs, gaussian_kernel.png, otsu_histogram.png and contact_sheet.png"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m basics", description="Classic vision ops, written by hand.")
    ops = parser.add_subparsers(dest="op", required=True, metavar="OP")

    def op(name: str, run, help: str, out_help: str = "output PNG") -> argparse.ArgumentParser:
        sub = ops.add_parser(name, help=help, description=help)
        sub.add_argument("image", type=Path, metavar="IMAGE", help="any photo Pillow can read")
        default = OUT_DIR if name == "all" else OUT_DIR / f"{name.replace('-', '_')}.png"
        sub.add_argument("-o", "--out", type=Path, default=default, help=f"{out_help} (default: %(default)s)")
        sub.set_defaults(run=run)
        return sub

    op("gray", run_gray, "grey from RGB with the ITU-R BT.601 weights")
    op("yuv", run_yuv, "RGB to YUV; writes the Y, U and V planes side by side")
    mean = op("mean-blur", run_mean_blur, "mean (box) blur")
    mean.add_argument("--ksize", type=positive_int, default=MEAN_KSIZE, help="window side (default: %(default)s)")
    mean.add_argument("--noise", type=fraction, default=0.0, metavar="FRACTION",
                      help="first turn this fraction of pixels into salt-and-pepper noise (default: %(default)s)")
    gauss = op("gaussian-blur", run_gaussian_blur, "Gaussian blur")
    gauss.add_argument("--ksize", type=odd_positive_int, default=GAUSSIAN_KSIZE,
                       help="kernel side, odd (default: %(default)s)")
    gauss.add_argument("--sigma", type=positive_float, default=GAUSSIAN_SIGMA,
                       help="standard deviation in pixels (default: %(default)s)")
    gauss.add_argument("--figure", type=Path, metavar="PNG", help="also plot the kernel in 2-D and 3-D here")
    edges = op("canny", run_canny, "Canny edges, white on black")
    edges.add_argument("--low", type=non_negative_float, default=canny.LOW,
                       help="weak threshold (default: %(default)s)")
    edges.add_argument("--high", type=non_negative_float, default=canny.HIGH,
                       help="strong threshold (default: %(default)s)")
    edges.add_argument("--ksize", type=odd_positive_int, default=canny.SMOOTH_KSIZE,
                       help="smoothing kernel side, odd (default: %(default)s)")
    edges.add_argument("--sigma", type=non_negative_float, default=canny.SMOOTH_SIGMA,
                       help="smoothing sigma; 0 skips smoothing, as cv2.Canny does (default: %(default)s)")
    thresh = op("otsu", run_otsu, "Otsu's threshold; foreground (above it) white on black")
    thresh.add_argument("--figure", type=Path, metavar="PNG", help="also plot the histogram and the threshold here")
    op("all", run_all, "every op with its defaults, the figures and a contact sheet", out_help="output folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        print(f"{args.out}: {args.run(args)}")
        return 0

    return run_reporting_errors(body)


if __name__ == "__main__":
    sys.exit(main())
