"""The stability term for video (``loss.temporal_weight``): a feed-forward network flickers because a frame and
the next one, which differ by a small motion and sensor noise, get outputs that differ by more than that
motion. The term shows the network a slightly shifted, zoomed and noised copy of each training image and
asks that its output be the same transform of the output for the original (Gupta et al. 2017,
"Characterizing and Improving Stability in Neural Style Transfer"; Huang et al. 2017, "Real-Time Neural Style
Transfer for Videos"), without optical flow: the motion is the transform, known exactly.

Its random transforms are a function of the step's seed (:attr:`fastnst.losses.LossInputs.seed`), so a
resumed run draws the same ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastnst.losses.base import LossInputs, LossTerm


def random_transforms(n: int, height: int, width: int, generator: torch.Generator, shift: float, zoom: float
                      ) -> torch.Tensor:
    """[n, 2, 3] affine maps (for ``F.affine_grid``, align_corners=False) of a zoom by a factor uniform in
    [1 - zoom, 1 + zoom] about the centre and a shift uniform in [-shift, shift] pixels per axis."""
    u = torch.rand(n, 3, generator=generator) * 2 - 1
    scale = 1 / (1 + zoom * u[:, 0])  # sampling grid scale: < 1 zooms in
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, 0, 2] = 2 * shift * u[:, 1] / width
    theta[:, 1, 2] = 2 * shift * u[:, 2] / height
    return theta


def warp(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] resampled along ``grid`` [N, H, W, 2] (bilinear, edges replicated)."""
    return F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=False)


class TemporalTerm(LossTerm):
    """Mean squared difference, over pixels both images show, between ``f(T(x) + noise)`` and ``T(f(x))`` for a
    random small transform ``T`` per image (:func:`random_transforms`) and Gaussian ``noise`` of standard
    deviation ``noise``. Zero for a network that commutes with small motions and ignores noise; gradients flow
    through both outputs. Outside training (no network in the inputs) it is 0: it measures the network, not an
    image."""

    needs_network = True

    def __init__(self, shift: float = 2.0, zoom: float = 0.03, noise: float = 0.02) -> None:
        super().__init__()
        if shift < 0 or not 0 <= zoom < 0.5 or noise < 0:
            raise ValueError(f"temporal shift, zoom and noise must be >= 0 (zoom < 0.5); got {shift}, {zoom}, {noise}")
        self.shift, self.zoom, self.noise = float(shift), float(zoom), float(noise)

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        if inputs.stylize is None or inputs.content is None:
            return inputs.output.new_zeros(()).float()
        x, y = inputs.content, inputs.output
        n, _, h, w = x.shape
        g = torch.Generator().manual_seed(int(inputs.seed or 0))
        theta = random_transforms(n, h, w, g, self.shift, self.zoom)
        grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False).to(x.device)
        noise = self.noise * torch.randn(x.shape, generator=g) if self.noise else None
        moved = warp(x.float(), grid)
        if noise is not None:
            moved = moved + noise.to(x.device)
        moved = moved.clamp(0, 1).to(x.dtype)
        if x.is_contiguous(memory_format=torch.channels_last):
            moved = moved.contiguous(memory_format=torch.channels_last)
        target = warp(y.float(), grid)
        # pixels whose source lies inside the image by at least one pixel: no replicated edge in the target
        margin = torch.tensor([2.0 / w, 2.0 / h], device=grid.device)
        inside = ((grid.abs() <= 1 - margin).all(-1, keepdim=True)).permute(0, 3, 1, 2).to(torch.float32)
        diff = (inputs.stylize(moved).float() - target).pow(2) * inside
        return diff.sum() / (inside.sum() * y.shape[1]).clamp_min(1.0)
