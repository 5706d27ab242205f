"""Stage 7, blocked: register-tiled, cache-friendly convolution kernels that beat PyTorch eager on a CPU."""
