"""What the network sees: class activation maps, conv1's filters and feature maps of one photo (`make explain`)."""
