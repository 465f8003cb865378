"""Native bijections: couplings, autoregressive layers, ActNorm, 1×1 convolutions, permutations, Squeeze."""
