"""Before ResNet: classic computer vision written by hand, and a first trained network.

Each op is a small module, numpy first (numba only where a loop cannot be vectorized), checked
against OpenCV by tests/test_basics.py:

- ``color``  grayscale (ITU-R BT.601) and RGB <-> YUV;
- ``blur``   mean (box) blur and Gaussian blur, both separable filters;
- ``canny``  Canny edges: smoothing, Sobel, non-maximum suppression, double threshold, hysteresis;
- ``otsu``   Otsu's threshold from the grey-level histogram.

``python -m basics OP IMAGE -o OUT.png`` runs one op; ``python -m basics all IMAGE -o DIR`` runs them all.
``basics.digits`` trains a small CNN on 8x8 digits and re-runs it with stage 1's hand-written ops.
Images are HWC uint8 RGB (or HW uint8 grey) throughout, as Pillow and common.image give them.
"""
