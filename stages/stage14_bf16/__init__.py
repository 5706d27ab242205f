"""Stage 14, bfloat16: weights and activations rounded to bfloat16, float32 sums by vdpbf16ps."""
