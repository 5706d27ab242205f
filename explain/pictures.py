"""The pictures of `python -m explain`, drawn with numpy and Pillow only, so that `make explain` needs the
runtime requirements alone (matplotlib is a dev-only dependency): a colormap written out by hand, heat maps
over the photo, conv1's filters, feature maps, and a contact sheet of all of them.

Images are HWC uint8 RGB arrays or Pillow images; maps are HW float arrays scaled to 0..1.
"""

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from explain.cam import normalized, upsampled

# matplotlib's "inferno" sampled at 17 evenly spaced points (RGB, 0..255), joined by straight lines. Inferno is
# perceptually uniform: equal steps in the map look like equal steps in brightness, from black (nothing) to
# pale yellow (the most), so dark parts of an overlay are the parts the class ignores. The rainbow "jet" of
# the CAM paper shows bands that are not in the data. tests/test_explain.py checks it against matplotlib.
INFERNO = np.array([(0, 0, 4), (11, 7, 36), (33, 12, 74), (61, 9, 101), (87, 16, 110), (113, 25, 110),
                    (138, 34, 106), (163, 44, 97), (188, 55, 84), (210, 70, 68), (228, 90, 49), (241, 115, 29),
                    (249, 142, 9), (252, 172, 17), (249, 203, 53), (242, 234, 105), (252, 255, 164)], np.float64)
HEAT_ALPHA = 0.5  # the overlay: half heat map, half photo
FONT_PX = 14
MARGIN = 6  # pixels around text and between panels
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
LEGEND_HEIGHT = 10  # the colour bar under a heat map
FILTER_ZOOM = 8  # conv1's 7x7 filters drawn 56x56, each weight a visible square
FILTER_COLUMNS = 8
GREY = 0.5  # a filter weight of 0 is drawn mid-grey, positive brighter, negative darker
FEATURE_PX = 112  # each feature map drawn 112x112 whatever its resolution, each activation a visible square
FEATURE_CHANNELS = 6  # the strongest channels shown per group
SHEET_WIDTH = 1200  # the contact sheet wraps its panels to rows of at most this width

FONT = ImageFont.load_default(size=FONT_PX)  # Pillow's own font, built in: no font files needed


def colormap(values: np.ndarray) -> np.ndarray:
    """HW in 0..1 -> HWC uint8 RGB along INFERNO."""
    positions = np.linspace(0.0, 1.0, len(INFERNO))
    rgb = [np.interp(np.clip(values, 0.0, 1.0), positions, INFERNO[:, channel]) for channel in range(3)]
    return np.round(np.stack(rgb, axis=-1)).astype(np.uint8)


def overlay(photo: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """The photo (HWC uint8) with a map of the same height and width (0..1) blended over it."""
    blended = (1.0 - HEAT_ALPHA) * photo + HEAT_ALPHA * colormap(heat)
    return np.round(blended).astype(np.uint8)


def text_size(text: str) -> tuple[int, int]:
    left, top, right, bottom = FONT.getbbox(text)
    return right, bottom


def with_text(image: Image.Image, text: str, below: bool = False) -> Image.Image:
    """The image with a line of text above it (or below), on a strip as wide as the wider of the two."""
    width, height = text_size(text)
    strip = height + 2 * MARGIN
    out = Image.new("RGB", (max(image.width, width + 2 * MARGIN), image.height + strip), BACKGROUND)
    out.paste(image, ((out.width - image.width) // 2, 0 if below else strip))
    ImageDraw.Draw(out).text((MARGIN, image.height + MARGIN if below else MARGIN), text, fill=TEXT, font=FONT)
    return out


def row(images: list[Image.Image], gap: int = MARGIN) -> Image.Image:
    """Images side by side, tops aligned."""
    out = Image.new("RGB", (sum(i.width for i in images) + gap * (len(images) - 1), max(i.height for i in images)),
                    BACKGROUND)
    x = 0
    for image in images:
        out.paste(image, (x, 0))
        x += image.width + gap
    return out


def column(images: list[Image.Image], gap: int = MARGIN) -> Image.Image:
    """Images one under the other, left edges aligned."""
    out = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images) + gap * (len(images) - 1)),
                    BACKGROUND)
    y = 0
    for image in images:
        out.paste(image, (0, y))
        y += image.height + gap
    return out


def legend(width: int) -> Image.Image:
    """The colour bar: what the heat map's colours mean."""
    bar = Image.fromarray(colormap(np.tile(np.linspace(0.0, 1.0, width), (LEGEND_HEIGHT, 1))))
    low, high = "less evidence", "more"
    labels = Image.new("RGB", (width, text_size(low)[1] + MARGIN), BACKGROUND)
    draw = ImageDraw.Draw(labels)
    draw.text((0, 0), low, fill=TEXT, font=FONT)
    draw.text((width - text_size(high)[0], 0), high, fill=TEXT, font=FONT)
    return column([bar, labels], gap=MARGIN // 2)


def framed(image: Image.Image, margin: int = MARGIN) -> Image.Image:
    """The image on a background margin wide all round."""
    out = Image.new("RGB", (image.width + 2 * margin, image.height + 2 * margin), BACKGROUND)
    out.paste(image, (margin, margin))
    return out


def cam_picture(photo: np.ndarray, cam: np.ndarray, title: str) -> Image.Image:
    """One class's map (7x7), scaled to 0..1, upsampled to the photo's size and laid over it, with a title."""
    heat = upsampled(normalized(cam), photo.shape[0])
    return framed(with_text(column([Image.fromarray(overlay(photo, heat)), legend(photo.shape[1])]), title))


def filters_picture(filters: np.ndarray, title: str) -> Image.Image:
    """conv1's filters, OHWI in RGB order, as a colour grid; each filter scaled to its own largest |weight|,
    with 0 drawn mid-grey."""
    largest = np.abs(filters).max(axis=(1, 2, 3), keepdims=True)
    scaled = GREY + GREY * filters / np.where(largest > 0, largest, 1.0)
    tiles = [Image.fromarray(np.round(255 * f).astype(np.uint8)).resize(
        (f.shape[1] * FILTER_ZOOM, f.shape[0] * FILTER_ZOOM), Image.Resampling.NEAREST) for f in scaled]
    rows = [row(tiles[i:i + FILTER_COLUMNS], gap=MARGIN // 2) for i in range(0, len(tiles), FILTER_COLUMNS)]
    return with_text(column(rows, gap=MARGIN // 2), title)


def strongest(activation: np.ndarray, count: int) -> list[int]:
    """The channels of an HWC activation with the highest mean: what global average pooling would pass on."""
    return [int(c) for c in np.argsort(-activation.mean(axis=(0, 1)), kind="stable")[:count]]


def feature_row(name: str, activation: np.ndarray) -> Image.Image:
    """The FEATURE_CHANNELS strongest channels of one group's output (HWC, after ReLU), each scaled to its own
    maximum and drawn with nearest-neighbour squares, so that the resolution (56 ... 7) shows."""
    height, width, channels = activation.shape
    maps = []
    for channel in strongest(activation, FEATURE_CHANNELS):
        values = activation[..., channel]
        top = float(values.max())
        image = Image.fromarray(colormap(values / top if top > 0 else values))
        maps.append(with_text(image.resize((FEATURE_PX, FEATURE_PX), Image.Resampling.NEAREST), f"#{channel}",
                              below=True))
    title = f"{name}: {height}x{width}x{channels}, the {len(maps)} strongest channels (highest mean)"
    return with_text(row(maps), title)


def features_picture(activations: dict[str, np.ndarray]) -> Image.Image:
    return column([feature_row(name, activation) for name, activation in activations.items()], gap=MARGIN * 2)


def text_panel(lines: list[str]) -> Image.Image:
    """A few lines of text as a picture."""
    height = text_size("Ag")[1] + MARGIN
    out = Image.new("RGB", (max(text_size(line)[0] for line in lines) + 2 * MARGIN, height * len(lines) + MARGIN),
                    BACKGROUND)
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((MARGIN, MARGIN + i * height), line, fill=TEXT, font=FONT)
    return out


def contact_sheet(panels: list[Image.Image]) -> Image.Image:
    """The panels left to right, in rows at most SHEET_WIDTH wide (a wider panel gets a row of its own)."""
    rows, current = [], []
    for panel in panels:
        if current and sum(p.width + 2 * MARGIN for p in current) + panel.width > SHEET_WIDTH:
            rows.append(current)
            current = []
        current.append(panel)
    rows.append(current)
    return framed(column([row(r, gap=2 * MARGIN) for r in rows], gap=2 * MARGIN))
