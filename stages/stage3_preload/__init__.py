"""Stage 3, preload: every weight loaded once into a pool, before inference."""

from stages import Stage

STAGE = Stage(__name__)
