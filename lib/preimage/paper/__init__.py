"""The CVPR 2015 protocol: the recipes (λ per layer, schedules, pixel range, stand-in layers,
profiles), the figure sweeps, Tables 1 and 3, the neural streams and the HOGgle baseline."""
