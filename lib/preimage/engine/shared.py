"""Several layers of one network in one forward pass: each batch item leaves at its own layer.

A sweep over layers inverts one problem per layer. Run one at a time, each pays for the network
up to its layer with a batch of one; run together through ``SharedTrunk``, the items share every
module they both need (one batched call instead of many small ones), and an item stops being
computed at its own layer, so no one pays for the layers after theirs.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import SettingsError


def leaves(module: nn.Module) -> list[nn.Module]:
    """The modules a Sequential chain runs, nested Sequentials opened up."""
    if isinstance(module, nn.Sequential):
        return [leaf for child in module for leaf in leaves(child)]
    return [module]


def shareable(representations: list) -> str | None:
    """None if ``representations`` can share one forward pass, else why not."""
    first = representations[0]
    for rep in representations:
        if (rep.model, rep.weights, rep.trained, rep.mean) != (first.model, first.weights, first.trained, first.mean):
            return (f"{rep.label} and {first.label} are not the same network and weights")
        if not isinstance(rep.body, nn.Sequential):
            return f"{rep.label} is not a chain of modules (nn.Sequential)"
    chains = sorted((leaves(rep.body) for rep in representations), key=len)
    deepest = chains[-1]
    for chain in chains:
        for mine, theirs in zip(chain, deepest):
            # repr carries a module's configuration (kernel, stride, ...), the state its weights
            if repr(mine) != repr(theirs) or not _same_state(mine, theirs):
                return f"the layers of {first.model} are not prefixes of one chain with the same weights"
    return None


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    if a is b:
        return True
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class SharedTrunk(nn.Module):
    """Codes at several layers from one pass through the deepest layer's chain.

    ``forward(x, counts)``: the batch is ordered by layer as ``representations`` are (their
    order is free), ``counts[g]`` items for layer g; returns the list of codes per layer."""

    def __init__(self, representations: list):
        super().__init__()
        why = shareable(representations)
        if why:
            raise SettingsError(f"these layers cannot share one forward pass: {why}; invert them one at a time")
        self.representations = representations
        chains = [leaves(rep.body) for rep in representations]
        deepest = max(range(len(chains)), key=lambda g: len(chains[g]))
        self.chain = nn.ModuleList(chains[deepest])
        self.exits = [len(c) for c in chains]  # layer g's code is the output of chain[:exits[g]]

    def forward(self, x: torch.Tensor, counts: list[int]) -> list[torch.Tensor]:
        if len(counts) != len(self.exits) or sum(counts) != len(x):
            raise SettingsError(f"counts {counts} do not split a batch of {len(x)} over {len(self.exits)} layers")
        # rows of layer g start at starts[g]; by leaving order, the rows still running are a suffix...
        starts = [sum(counts[:g]) for g in range(len(counts))]
        order = sorted(range(len(counts)), key=lambda g: self.exits[g])
        # ...once the batch is permuted so that earlier exits come first
        perm = torch.cat([torch.arange(starts[g], starts[g] + counts[g], device=x.device) for g in order])
        h = x[perm] if len(order) > 1 else x
        codes: list[torch.Tensor | None] = [None] * len(counts)
        depth = 0
        for g in order:
            while depth < self.exits[g]:
                h = self.chain[depth](h)
                depth += 1
            codes[g] = h[:counts[g]]
            h = h[counts[g]:]
        return codes
