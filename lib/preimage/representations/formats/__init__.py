"""Readers of the weights files the paper's network is published in (.caffemodel, MatConvNet .mat)."""
