"""Building blocks shared by the architectures: the style-conditional instance norm and the conv layers
of Johnson et al. 2016 that pass the style condition down to it.

Every normalisation layer of a fastnst network is a :class:`StyleNorm`. That one choice is what makes
a network multi-style (Dumoulin et al. 2017), lets tiled inference share whole-image statistics between
tiles (``fastnst.inference.tiling``), and lets a new style be learned by training norm parameters only.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def widths(channels: Any, levels: int, example: str) -> list[int]:
    """``channels`` as ``levels`` positive integer widths (one per resolution level), else a ValueError that names
    the setting (the training config reports it as ``model.channels``)."""
    values = list(channels) if isinstance(channels, (list, tuple)) else []
    if len(values) != levels or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in values):
        raise ValueError(f"channels must be {levels} positive widths, one per resolution level (e.g. {example}), "
                         f"got {channels!r}")
    return values


def count(value: Any, name: str, minimum: int = 0) -> int:
    """``value`` as an integer >= ``minimum``, else a ValueError naming the setting ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return value


class StyleNorm(nn.Module):
    """Instance normalisation with a learned scale and shift per style: conditional instance norm
    (Dumoulin, Shlens, Kudlur 2017, "A Learned Representation for Artistic Style").

    ``weight`` and ``bias`` are [num_styles, C]. ``forward(x, style)``: ``style`` is None for a one-style
    network, [N, num_styles] weights per image or [1, num_styles] for the whole batch; the scale and shift
    are the style-weighted sums of the rows, so a one-hot row is that style and a convex combination blends
    styles in parameter space.

    With a base (:meth:`add_base`, networks that take a painting), ``style`` is a style vector of any real
    values and the tables are a linear map from it: scale = style @ weight + weight_base (the same for the
    shift), as the style-prediction network of Ghiasi et al. 2017 feeds its 100-d style vector to every norm.
    """

    def __init__(self, num_features: int, num_styles: int = 1, eps: float = 1e-5) -> None:
        super().__init__()
        if num_styles < 1:
            raise ValueError(f"num_styles must be at least 1, got {num_styles}")
        self.num_features, self.num_styles, self.eps = num_features, num_styles, eps
        self.weight = nn.Parameter(torch.ones(num_styles, num_features))
        self.bias = nn.Parameter(torch.zeros(num_styles, num_features))
        self.weight_base: nn.Parameter | None = None
        self.bias_base: nn.Parameter | None = None

    def add_base(self, init_std: float = 0.01) -> None:
        """Make the tables a linear map from a style vector (see the class docstring): a base scale of 1 and
        shift of 0 (the identity at start), map entries small and random so that the vector matters from step 1."""
        with torch.no_grad():
            nn.init.normal_(self.weight, 0.0, init_std)
            nn.init.normal_(self.bias, 0.0, init_std)
        self.weight_base = nn.Parameter(torch.ones(self.num_features))
        self.bias_base = nn.Parameter(torch.zeros(self.num_features))

    def scale_shift(self, style: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """[C] scale and shift for one style (``style`` None), else [N or 1, C] for ``style`` [N or 1, S]."""
        if style is None:
            if self.num_styles != 1:
                raise ValueError(f"this network holds {self.num_styles} styles: pass style weights [N, {self.num_styles}]")
            return self.weight[0], self.bias[0]
        if style.dim() != 2 or style.shape[1] != self.num_styles:
            raise ValueError(f"style weights must be [N, {self.num_styles}] or [1, {self.num_styles}], "
                             f"got {tuple(style.shape)}")
        style = style.to(self.weight.dtype)
        if self.weight_base is not None and self.bias_base is not None:
            return torch.addmm(self.weight_base, style, self.weight), torch.addmm(self.bias_base, style, self.bias)
        # A one-hot row gives that style's parameters exactly: 1*w + 0*others adds only exact zeros.
        return style @ self.weight, style @ self.bias

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        scale, shift = self.scale_shift(style)
        if scale.dim() == 2 and scale.shape[0] == 1:  # one style for the whole batch (inference, export)
            scale, shift = scale[0], shift[0]
        if scale.dim() == 1:
            return F.instance_norm(x, weight=scale, bias=shift, eps=self.eps)
        # A style per image: instance norm of [N, C, H, W] is batch norm of [1, N*C, H, W] (how PyTorch computes
        # instance norm), so the per-image scale and shift become that batch norm's per-channel affine and
        # conditioning costs no extra pass over the activations (a separate scale-and-shift cost ~10%).
        n, c = x.shape[:2]
        y = F.batch_norm(x.reshape(1, n * c, *x.shape[2:]), None, None, scale.reshape(n * c), shift.reshape(n * c),
                         True, 0.0, self.eps)
        return y.reshape(x.shape)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # Files written before style conditioning (format 1, pytorch/examples) hold nn.InstanceNorm2d's [C]
        # affine parameters, and pytorch/examples' older files running statistics that are never used.
        for name in ("weight", "bias"):
            value = state_dict.get(prefix + name)
            if isinstance(value, torch.Tensor) and value.dim() == 1 and self.num_styles == 1:
                state_dict[prefix + name] = value.unsqueeze(0)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            state_dict.pop(prefix + name, None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        base = ", base" if self.weight_base is not None else ""
        return f"{self.num_features}, num_styles={self.num_styles}, eps={self.eps}{base}"


def add_style_bases(net: nn.Module) -> None:
    """Turn every :class:`StyleNorm` of ``net`` into a linear map from a style vector (:meth:`StyleNorm.add_base`)."""
    for m in net.modules():
        if isinstance(m, StyleNorm):
            m.add_base()


def run(layers: nn.Module, x: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
    """Apply a stack of layers, handing ``style`` to those that take it (norms, conditional blocks)."""
    for layer in layers.children():
        x = layer(x, style) if isinstance(layer, (StyleNorm, Conditional)) else layer(x)
    return x


class Conditional(nn.Module):
    """Marker base: a block whose forward takes ``(x, style)``."""


class ConvLayer(nn.Sequential, Conditional):
    """Reflection padding, convolution, optional style norm and ReLU (children 0-3 as in format 1 files)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, norm: bool = True, relu: bool = True,
                 num_styles: int = 1) -> None:
        layers: list[nn.Module] = [nn.ReflectionPad2d(kernel // 2), nn.Conv2d(cin, cout, kernel, stride)]
        if norm:
            layers.append(StyleNorm(cout, num_styles))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        return run(self, x, style)


class ResidualBlock(Conditional):
    """Two 3x3 conv + norm layers with an identity shortcut (no ReLU after the sum; Gross & Wilber 2016)."""

    def __init__(self, channels: int, num_styles: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(ConvLayer(channels, channels, 3, num_styles=num_styles),
                                  ConvLayer(channels, channels, 3, relu=False, num_styles=num_styles))

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        return x + run(self.body, x, style)


# Nearest x2 upsampling followed by a reflection-padded 3x3 convolution (pytorch/examples' UpsampleConvLayer)
# reads only 2x2 low-resolution pixels per output pixel, on the replicate-padded low-resolution input, with taps
# that are sums of the 3x3 taps: 16/36 of the multiply-adds, and no upsampled or padded copy of the
# high-resolution tensor. Two exact forms of it (same result to float rounding):
# - sub-pixel ("phase"): a 2x2 convolution to 4x the channels, one group per output phase, then
#   pixel_shuffle. Window j of the padded input gives output rows 2j-1 (taps w0+w1, w2) and 2j (w0, w1+w2),
#   so the shuffled result is the output shifted by one row and column, cropped here. Used by PyTorch.
# - a stride-2 transposed convolution with a 4x4 kernel. Row t of the 4-tap kernel sums these 3x3 taps: t=0 ->
#   w2, t=1 -> w1+w2, t=2 -> w0+w1, t=3 -> w0. Used in ONNX exports.
# Which is faster was measured (scripts/upsampling_forms.py, the default network's shapes, 2026-12-06, 2-core
# AMD EPYC Zen 5): in PyTorch the sub-pixel form ran 1.5-2.3x the transposed one in fp32 inference, 3.8-11x in
# bf16 (oneDNN's bf16 transposed convolution with a bias is slow) and 1.1-1.8x in training; in onnxruntime the
# transposed form was 1.1-1.3x faster at three shapes of four, so ONNX exports keep it.
_TAPS_3_TO_4 = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0))
_PHASE_TAPS = (((1.0, 1.0, 0.0), (0.0, 0.0, 1.0)), ((1.0, 0.0, 0.0), (0.0, 1.0, 1.0)))  # [phase, window pos, tap]


def replicate_pad1(x: torch.Tensor) -> torch.Tensor:
    """``F.pad(x, (1, 1, 1, 1), mode="replicate")`` from slices and cat: Inductor (torch 2.14) mis-strides
    ``replication_pad2d_backward`` after a transposed convolution, so training with ``compile=true`` failed."""
    x = torch.cat([x[..., :1, :], x, x[..., -1:, :]], dim=-2)
    return torch.cat([x[..., :1], x, x[..., -1:]], dim=-1)


def upsample_conv_weight(weight: torch.Tensor) -> torch.Tensor:
    """A 3x3 conv weight [Cout, Cin, 3, 3] as the equivalent stride-2 transposed-conv weight [Cin, Cout, 4, 4]."""
    m = weight.new_tensor(_TAPS_3_TO_4)
    return torch.einsum("ra,cb,oiab->iorc", m, m, weight)


def upsample_phase_weight(weight: torch.Tensor) -> torch.Tensor:
    """A 3x3 conv weight [Cout, Cin, 3, 3] as the sub-pixel form's 2x2 weight [4 Cout, Cin, 2, 2] (channel
    ``4c + 2 * row phase + column phase``, the order ``pixel_shuffle`` reads)."""
    m = weight.new_tensor(_PHASE_TAPS)
    cout, cin = weight.shape[:2]
    return torch.einsum("yau,xbv,ciuv->cyxiab", m, m, weight).reshape(cout * 4, cin, 2, 2)


def _phase_params(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(:func:`upsample_phase_weight`, bias repeated per phase) of ``conv``, kept on the module between calls where
    no gradient is wanted and nothing traces the call (eager inference): the taps cost ~2% of an eager fp32 forward
    pass at 512x512 when recomputed every call (``fastnst bench --parts profile``). The copy is keyed by the
    weight's and bias's storage, version (in-place updates such as ``load_state_dict``), dtype and device, so it
    never outlives the parameters it was made of."""
    w, b = conv.weight, conv.bias

    def make() -> tuple[torch.Tensor, torch.Tensor | None]:
        return upsample_phase_weight(w), None if b is None else b.repeat_interleave(4)

    if torch.is_grad_enabled() or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return make()
    key = tuple((t.data_ptr(), t._version, t.dtype, t.device, tuple(t.shape)) for t in (w, b) if t is not None)
    cached = conv.__dict__.get("_fastnst_upsample_phase")
    if cached is None or cached[0] != key:
        cached = (key, make())
        conv.__dict__["_fastnst_upsample_phase"] = cached  # a plain attribute: not a buffer, never saved
    return cached[1]


def upsample_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """Nearest x2 upsampling, reflection padding 1 and the 3x3 ``conv``, computed in the sub-pixel form (the
    transposed-convolution form in an ONNX export; see above); the result has one extra row and column (cropped
    by the caller), so that the crop always cuts something: a crop that may or may not be empty is a branch
    torch.export would bake in."""
    x = replicate_pad1(x)
    if torch.onnx.is_in_onnx_export():
        return F.conv_transpose2d(x, upsample_conv_weight(conv.weight), conv.bias, stride=2, padding=3,
                                  output_padding=1)
    weight, bias = _phase_params(conv)
    return F.pixel_shuffle(F.conv2d(x, weight, bias), 2)[..., 1:, 1:]


class UpLayer(Conditional):
    """Upsample x2 and convolve, then crop to exactly ``like``'s size (odd sizes drop the extra row/column).

    ``nearest`` (default) is nearest-neighbour upsampling, reflection padding and a 3x3 convolution, as in
    pytorch/examples (no checkerboard artefacts, Odena et al. 2016), computed as the equivalent transposed
    convolution (:func:`upsample_conv`); ``transpose`` is the paper's learned 3x3 transposed convolution."""

    def __init__(self, cin: int, cout: int, mode: str, num_styles: int = 1) -> None:
        super().__init__()
        self.mode = mode
        if mode == "nearest":
            self.conv = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3))
        elif mode == "transpose":
            self.conv = nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)
        else:
            raise ValueError(f"upsample must be 'nearest' or 'transpose', got {mode!r}")
        self.post = nn.Sequential(StyleNorm(cout, num_styles), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor, like: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        size = like.shape[-2:]
        x = upsample_conv(x, self.conv[1]) if self.mode == "nearest" else self.conv(x)
        return run(self.post, x[..., : size[0], : size[1]], style)
