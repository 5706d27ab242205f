"""course.pictures: every stage's picture is drawn, and its README shows it.

- every stage folder: `python -m course.pictures`'s `draw` writes a PNG of the picture's width into a temporary
  folder (at a low resolution, to keep the test quick), with the stage's plan run on stand-in weights;
- every stage README shows picture.png once, with alt text, right after its first paragraph (and after the list
  that paragraph introduces, when it ends with a colon), and a caption line under it;
- the Winograd check a picture runs on the matrices it draws fails for a wrong matrix.
"""

import re

import pytest
from PIL import Image

from common.paths import REPO
from common.stages import STAGES
from course.pictures import draw
from course.pictures.shared import WIDTH
from course.pictures.stages10_11 import winograd_check

TEST_DPI = 30  # low, so that drawing every stage's picture takes a few seconds
IMAGE_LINE = re.compile(r"!\[([^\]]+)\]\(picture\.png\)")


@pytest.mark.parametrize("stage", STAGES)
def test_picture_draws(stage, tmp_path):
    path = draw(stage, tmp_path, TEST_DPI)
    assert path == tmp_path / "picture.png"
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width == round(WIDTH * TEST_DPI)
        assert image.height > image.width / 4


@pytest.mark.parametrize("stage", STAGES)
def test_readme_shows_picture(stage):
    readme = (REPO / "stages" / stage / "README.md").read_text()
    lines = readme.splitlines()
    first_blank = lines.index("", 1)  # the title, a blank line, then the first paragraph
    end_of_paragraph = lines.index("", first_blank + 1)
    if lines[end_of_paragraph - 1].endswith(":"):
        end_of_paragraph = lines.index("", end_of_paragraph + 1)
    assert IMAGE_LINE.fullmatch(lines[end_of_paragraph + 1]), f"{stage}: no picture line after the first paragraph"
    caption = lines[end_of_paragraph + 2]
    assert caption.strip() and not caption.startswith(("#", "!")), f"{stage}: no caption under the picture"
    assert len(IMAGE_LINE.findall(readme)) == 1


def test_winograd_check_catches_a_wrong_matrix():
    b_t = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    g = [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]
    a_t = [[1, 1, 1, 0], [0, 1, -1, -1]]
    winograd_check(b_t, g, a_t, 2)
    wrong = [row[:] for row in b_t]
    wrong[1][2] = -1
    with pytest.raises(AssertionError):
        winograd_check(wrong, g, a_t, 2)
