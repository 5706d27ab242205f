"""What every stage shares: the architecture, the weights, image loading, labels, timing, the command line."""
