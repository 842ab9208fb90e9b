"""What a network costs per image: multiply-adds per output pixel, the figure the architectures are compared by.

Counted by PyTorch's own FLOP counter (``torch.utils.flop_counter``) on one forward pass, so functional
convolutions (the sub-pixel form of the johnson network's upsampling) count as well as modules.
Convolutions and matrix products are counted; norms, activations and rearrangements (pixel shuffle, crops)
are not, as is usual for this figure. The count grows slightly for sizes that are not a multiple of 4
(padding); 256x256 is the reference size.
"""

from __future__ import annotations

import torch
from torch import nn

REFERENCE_SIZE = (256, 256)  # (height, width)


def macs_per_pixel(net: nn.Module, size: tuple[int, int] = REFERENCE_SIZE) -> float:
    """Multiply-adds of one forward pass of ``net`` on one [1, 3, H, W] image, divided by H * W."""
    from torch.utils.flop_counter import FlopCounterMode

    h, w = size
    p = next(net.parameters(), None)
    x = torch.rand(1, 3, h, w, device=p.device if p is not None else "cpu", dtype=p.dtype if p is not None else None)
    num_styles = int(getattr(net, "config", dict)().get("num_styles", 1))
    style = None if num_styles == 1 else torch.full((1, num_styles), 1.0 / num_styles, device=x.device, dtype=x.dtype)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(x, style)
    finally:
        net.train(was_training)
    return counter.get_total_flops() / 2 / (h * w)  # the counter counts a multiply-add as 2 FLOPs


def activation_bytes_per_pixel(net: nn.Module, size: tuple[int, int] = (64, 64)) -> float:
    """An upper estimate of the memory one forward pass of ``net`` (inference, its own dtype) holds at once, in bytes
    per input pixel: 8 times its largest layer output (an input, an output, skip connections and the allocator's
    slack are alive together; measured peaks: 750 bytes for the default johnson network, whose largest output is
    32 channels at full resolution, 128 bytes; 90-150 for the mobile one) plus the input and output images."""
    h, w = size
    p = next(net.parameters(), None)
    x = torch.rand(1, 3, h, w, device=p.device if p is not None else "cpu", dtype=p.dtype if p is not None else None)
    num_styles = int(getattr(net, "config", dict)().get("num_styles", 1))
    style = None if num_styles == 1 else torch.full((1, num_styles), 1.0 / num_styles, device=x.device, dtype=x.dtype)
    largest = 0

    def record(module: nn.Module, args: object, out: object) -> None:
        nonlocal largest
        if isinstance(out, torch.Tensor):
            largest = max(largest, out.numel() * out.element_size())

    handles = [m.register_forward_hook(record) for m in net.modules() if not list(m.children())]
    try:
        with torch.inference_mode():
            net(x, style)
    finally:
        for handle in handles:
            handle.remove()
    return 8 * largest / (h * w) + 24
