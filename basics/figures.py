"""Figures: the Gaussian kernel in 2-D and 3-D, Otsu's histogram with its threshold, a contact sheet of
results, and (for basics.digits) a confusion matrix. matplotlib's object API (Figure, no pyplot) draws
straight to a file, so no window or GUI backend is involved."""

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from basics.image import writing

DPI = 100
SHEET_COLUMNS = 5
PANEL_INCHES = 3.2  # the width of one panel on the contact sheet
TITLE_INCHES = 0.4
# A panel is drawn PANEL_INCHES * DPI = 320 pixels wide; bigger images are first shrunk by an integer factor to
# at most twice that (averaging blocks of pixels), so that a 12-megapixel photo does not take matplotlib 20 s.
PANEL_MAX_PIXELS = 640


def save(fig: Figure, path) -> Path:
    with writing(Path(path)) as path:
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def gaussian_kernel_figure(kernel_1d: np.ndarray, sigma: float, path) -> Path:
    """The 2-D kernel np.outer(k, k) as a heat map with its weights written in, and as a 3-D surface."""
    kernel = np.outer(kernel_1d, kernel_1d)  # (ksize, ksize)
    ksize = len(kernel_1d)
    offsets = np.arange(ksize) - ksize // 2
    fig = Figure(figsize=(11, 4.8))
    fig.suptitle(f"Gaussian kernel {ksize}x{ksize}, sigma {sigma:g} (weights sum to 1)")
    flat = fig.add_subplot(1, 2, 1)
    shown = flat.imshow(kernel, cmap="viridis", extent=(offsets[0] - 0.5, offsets[-1] + 0.5,
                                                          offsets[-1] + 0.5, offsets[0] - 0.5))
    for row, dy in enumerate(offsets):
        for col, dx in enumerate(offsets):
            flat.text(dx, dy, f"{kernel[row, col]:.3f}", ha="center", va="center", color="white", fontsize=8)
    flat.set(xlabel="column offset", ylabel="row offset", title="2-D")
    fig.colorbar(shown, ax=flat, shrink=0.8)
    surface = fig.add_subplot(1, 2, 2, projection="3d")
    cols, rows = np.meshgrid(offsets, offsets)
    surface.plot_surface(cols, rows, kernel, cmap="viridis", edgecolor="k", linewidth=0.3)
    surface.set(xlabel="column offset", ylabel="row offset", zlabel="weight", title="3-D")
    return save(fig, path)


def otsu_figure(counts: np.ndarray, variance: np.ndarray, threshold: int, path) -> Path:
    """The grey-level histogram, the between-class variance of every candidate threshold, and the chosen one."""
    fig = Figure(figsize=(8, 4.5))
    hist = fig.add_subplot(1, 1, 1)
    levels = np.arange(len(counts))
    hist.bar(levels, counts, width=1.0, color="0.55", label="pixels per grey level")
    hist.axvline(threshold, color="crimson", linewidth=2, label=f"Otsu threshold t = {threshold}")
    hist.set(xlabel="grey level", ylabel="pixels", xlim=(-1, len(counts)),
             title="Otsu: the threshold maximizing the between-class variance")
    curve = hist.twinx()
    curve.plot(levels, variance, color="tab:blue", label="between-class variance")
    curve.set_ylabel("between-class variance", color="tab:blue")
    lines = hist.get_legend_handles_labels()
    more = curve.get_legend_handles_labels()
    hist.legend(lines[0] + more[0], lines[1] + more[1], loc="upper right", fontsize=8)
    return save(fig, path)


def contact_sheet(panels: list[tuple[str, np.ndarray]], path) -> Path:
    """One PNG showing every (title, HW grey or HWC RGB uint8 image) panel, SHEET_COLUMNS to a row."""
    rows = -(-len(panels) // SHEET_COLUMNS)
    aspect = max(image.shape[0] / image.shape[1] for _, image in panels)  # height / width of the tallest panel
    fig = Figure(figsize=(SHEET_COLUMNS * PANEL_INCHES, rows * (PANEL_INCHES * aspect + TITLE_INCHES)))
    for i, (title, image) in enumerate(panels, start=1):
        ax = fig.add_subplot(rows, SHEET_COLUMNS, i)
        factor = math.ceil(image.shape[1] / PANEL_MAX_PIXELS)
        if factor > 1:
            image = np.asarray(Image.fromarray(image).reduce(factor))
        ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    return save(fig, path)


def confusion_figure(matrix: np.ndarray, title: str, path) -> Path:
    """A (classes, classes) confusion matrix: rows are the true digits, columns the predicted ones."""
    from sklearn.metrics import ConfusionMatrixDisplay

    fig = Figure(figsize=(6, 5.5))
    ax = fig.add_subplot(1, 1, 1)
    ConfusionMatrixDisplay(matrix).plot(ax=ax, cmap="Blues", colorbar=True)
    ax.set(xlabel="predicted digit", ylabel="true digit", title=title)
    return save(fig, path)
