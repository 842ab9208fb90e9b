"""What a training step draws at random, as pure functions of the run's seed and the step: the trained style of
each image of a multi-style batch, and the seed of the loss's own draws. Nothing is kept between steps, so a
resumed run draws exactly what an uninterrupted one would."""

from __future__ import annotations

import torch


def style_indices(step: int, batch: int, num_styles: int, seed: int, rank: int = 0, world_size: int = 1,
                  micro: int = 0, accumulate: int = 1) -> torch.Tensor:
    """The style of each image of a batch, [batch] indices in [0, num_styles): a pure function of its arguments,
    so a resumed run draws exactly what an uninterrupted one would.

    One style per image, dealt like cards from decks shuffled anew: the images of the whole run form one
    stream (optimizer step, accumulated micro-batch ``micro``, DDP rank, position in the batch), and every
    ``num_styles`` consecutive images of it hold every style once. So every style gets the same share of the
    training images, a batch holds distinct styles where it can, and DDP ranks draw different styles.
    """
    if num_styles == 1:
        return torch.zeros(batch, dtype=torch.long)
    start = ((step * accumulate + micro) * world_size + rank) * batch
    out = torch.empty(batch, dtype=torch.long)
    for deck in range(start // num_styles, (start + batch - 1) // num_styles + 1):
        g = torch.Generator().manual_seed(seed * 1_000_003 + deck)
        order = torch.randperm(num_styles, generator=g)
        lo, hi = max(start, deck * num_styles), min(start + batch, (deck + 1) * num_styles)
        out[lo - start: hi - start] = order[lo - deck * num_styles: hi - deck * num_styles]
    return out


def step_seed(step: int, seed: int, rank: int = 0) -> int:
    """The seed of a step's random draws inside the loss (e.g. the stability term's transforms): a pure
    function of (seed, step, rank), apart from :func:`style_indices`' stream, so resumed runs draw the same."""
    return (((seed * 1_000_003 + step) * 1_009 + rank) * 9_973 + 4_099) % (2**63 - 1)
