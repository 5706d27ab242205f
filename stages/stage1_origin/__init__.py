"""Stage 1, origin: ResNet-50 as plain nested loops, the math as written."""

from stages import Stage

STAGE = Stage(__name__)
