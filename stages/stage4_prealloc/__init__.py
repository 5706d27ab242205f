"""Stage 4, prealloc: every buffer allocated up front; no allocation in the forward pass."""
