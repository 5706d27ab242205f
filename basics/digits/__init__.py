"""A first trained network: a small CNN learns handwritten digits on the CPU in seconds, and is then run
again with stage 1's hand-written ops (the ones ResNet-50 is built from) to show they compute what torch does.

- ``data``     scikit-learn's bundled 8x8 digits (offline), or MNIST through torchvision when it downloads;
- ``net``      the network in torch, its training and its evaluation;
- ``by_hand``  the trained weights run through stages/stage1_origin/model.py's conv2d, relu, max_pool, ...

    python -m basics.digits [-o DIR] [--dataset digits|mnist] [--epochs N]
"""
