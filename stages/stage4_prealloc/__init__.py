"""Stage 4, prealloc: every buffer allocated up front; no allocation in the forward pass."""

from stages import Stage

STAGE = Stage(__name__)
