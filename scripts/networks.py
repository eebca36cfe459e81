"""Generator networks: the similar/adversarial pair (Charachon et al., ICPR 2020) and the real-time saliency masker.

* :class:`SimAdvGenerator` maps ``x`` to ``(x_s, x_a)`` (method.md §1-2) in the three layouts of the paper's generation
  table: ``'single'`` (one shared U-Net trunk, two output heads), ``'duo'`` (two complete networks) and ``'naive'``
  (``g_a`` only, ``x_s = x``).
* :class:`MaskGeneratorNet` is the Dabkowski & Gal (2017) masker baseline (method.md §4).

Both are built from MONAI's ``UNet`` and ``Convolution`` blocks; only the output parametrisation and the class
selection are written here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution, ResidualUnit
from monai.networks.nets import BasicUNet, UNet
from torch import nn

from .errors import BundleInputError

__all__ = [
    "GENERATOR_MODES",
    "UPSAMPLE_MODES",
    "ResizeConvUNet",
    "SpaceToDepthTrunk",
    "OUT_ACTIVATIONS",
    "SimAdvGenerator",
    "MaskGeneratorNet",
    "MAP_SPACES",
    "difference_map",
    "generator_map",
    "is_naive",
]

GENERATOR_MODES = ("single", "duo", "naive")
UPSAMPLE_MODES = ("deconv", "resize", "nontrainable", "pixelshuffle")
OUT_ACTIVATIONS = ("sigmoid", "clamp", "ste")
MAP_SPACES = ("logit", "image")
_LOGIT_EPS = 1e-3  # inputs are clipped to [eps, 1 - eps] before the logit: identity error <= 1e-3 of the range


def difference_map(
    x_s: torch.Tensor,
    x_a: torch.Tensor,
    space: str = "image",
    out_range: Sequence[float] = (0.0, 1.0),
    eps: float = _LOGIT_EPS,
) -> torch.Tensor:
    """The explanation ``E = Σ_c |x_s − x_a|``, shape ``(B, 1, *spatial)`` (method.md §1), measured in ``space``:

    * ``'image'``: the intensity difference itself, the paper's map;
    * ``'logit'``: ``Σ_c |logit(u_s) − logit(u_a)|`` with ``u = (x − lo) / (hi − lo)`` clipped to ``[eps, 1 − eps]``,
      the difference of the generators' residuals for :class:`SimAdvGenerator`'s sigmoid outputs. To first order
      the intensity difference is ``u (1 − u) · |δ_s − δ_a|``: a factor that depends on the image alone and not on
      the classifier, which ranks mid-grey pixels above dark and bright ones in every map (method.md, "The map's
      space"). The clip at the generator's own ``eps`` leaves out changes of less than ``eps`` of the range at
      saturated pixels, which no classifier sees.
    """
    if space not in MAP_SPACES:
        raise BundleInputError(f"explanation map space must be one of {MAP_SPACES}, got {space!r}")
    return _space_difference(x_s, x_a, space == "logit", float(out_range[0]), float(out_range[1]), eps)


def _space_difference(x_s: torch.Tensor, x_a: torch.Tensor, logit: bool, lo: float, hi: float, eps: float):
    """:func:`difference_map` once its arguments are checked (TorchScript compiles this part)."""
    if not logit:
        return (x_s - x_a).abs().sum(dim=1, keepdim=True)
    s = torch.logit((x_s.float() - lo) / (hi - lo), eps=eps)
    a = torch.logit((x_a.float() - lo) / (hi - lo), eps=eps)
    return (s - a).abs().sum(dim=1, keepdim=True)


def generator_map(generator: nn.Module | None, x_s: torch.Tensor, x_a: torch.Tensor) -> torch.Tensor:
    """The explanation of ``(x_s, x_a)`` in ``generator``'s map space (:meth:`SimAdvGenerator.explanation`); the
    image-space difference for a generator that defines none (a user's own module)."""
    explanation = getattr(generator, "explanation", None)
    return explanation(x_s, x_a) if callable(explanation) else difference_map(x_s, x_a)


def is_naive(generator: nn.Module | None, x: torch.Tensor | None = None, x_s: torch.Tensor | None = None) -> bool:
    """Whether ``generator`` is the Naive variant: its ``mode`` is ``'naive'``, or it returned ``x`` itself as
    ``x_s`` (then ``E = |x - x_a|`` and the terms on ``x_s`` are constant, method.md §2)."""
    return getattr(generator, "mode", None) == "naive" or (x_s is not None and x_s is x)


class ResizeConvUNet(UNet):
    """MONAI ``UNet`` whose decoder upsamples by interpolation then a stride-1 convolution ("resize-convolution",
    Odena et al., Distill 2016) instead of a strided transposed convolution.

    A transposed convolution whose kernel is not a multiple of its stride covers output pixels unevenly, so its outputs
    carry a lattice at the stride's period; an adversarial generator can inflate that lattice into a universal
    pattern that flips the classifier without touching the evidence (docs/method.md). Bilinear (trilinear) resizing
    has no such lattice. Same encoder, widths, residual units and parameter count as ``UNet``; only
    ``_get_up_layer`` (MONAI's documented extension point) differs.
    """

    def _get_up_layer(self, in_channels: int, out_channels: int, strides: int, is_top: bool) -> nn.Module:
        mode = ("linear", "bilinear", "trilinear")[self.dimensions - 1]
        conv: nn.Module = nn.Sequential(
            nn.Upsample(scale_factor=strides, mode=mode, align_corners=False),
            Convolution(
                self.dimensions, in_channels, out_channels, strides=1, kernel_size=self.up_kernel_size,
                act=self.act, norm=self.norm, dropout=self.dropout, bias=self.bias,
                conv_only=is_top and self.num_res_units == 0, adn_ordering=self.adn_ordering,
            ),
        )
        if self.num_res_units > 0:
            ru = ResidualUnit(
                self.dimensions, out_channels, out_channels, strides=1, kernel_size=self.kernel_size, subunits=1,
                act=self.act, norm=self.norm, dropout=self.dropout, bias=self.bias, last_conv_only=is_top,
                adn_ordering=self.adn_ordering,
            )
            conv = nn.Sequential(conv, ru)
        return conv


def _unet(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    channels: Sequence[int],
    strides: Sequence[int],
    num_res_units: int,
    act: str | tuple,
    norm: str | tuple,
    dropout: float,
    upsample: str = "deconv",
) -> nn.Module:
    """The trunk: MONAI ``UNet`` (transposed-conv upsampling), with ``upsample="resize"`` the same network with
    resize-convolutions (:class:`ResizeConvUNet`), or with ``upsample="nontrainable"`` / ``"pixelshuffle"`` MONAI
    ``BasicUNet`` (4 levels; ``channels`` gives its five encoder widths, e.g. ``[16, 16, 32, 64, 128]``)."""
    if upsample not in UPSAMPLE_MODES:
        raise BundleInputError(f"generator 'upsample' must be one of {UPSAMPLE_MODES}, got {upsample!r}")
    if upsample in ("nontrainable", "pixelshuffle"):
        if len(channels) != 5:
            raise BundleInputError(f"generator 'channels' needs 5 entries with upsample={upsample!r}, got {list(channels)}")
        return BasicUNet(
            spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
            features=(*channels, channels[0]), act=act, norm=norm, dropout=dropout, upsample=upsample,
        )
    if len(channels) < 2 or len(strides) != len(channels) - 1:
        raise BundleInputError(
            f"generator 'channels' needs >= 2 entries and 'strides' one fewer; got channels={list(channels)}, "
            f"strides={list(strides)}"
        )
    return (ResizeConvUNet if upsample == "resize" else UNet)(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(channels),
        strides=tuple(strides),
        num_res_units=num_res_units,
        act=act,
        norm=norm,
        dropout=dropout,
    )


class _SpaceToDepth(nn.Module):
    """``(B, C, *S) -> (B, C f^d, *S/f)``, the channel order of MONAI's ``pixelunshuffle`` (and torch's
    ``pixel_unshuffle`` in 2D), for any number of spatial dimensions. Written here because MONAI's function does not
    compile under TorchScript (``monai.bundle ckpt_export`` scripts the generator)."""

    def __init__(self, spatial_dims: int, factor: int) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f, d = self.factor, self.spatial_dims
        shape = x.shape
        depth = 1
        for _ in range(d):
            depth *= f  # f ** d as an int (TorchScript types int ** int as a float)
        split: list[int] = [shape[0], shape[1]]
        reduced: list[int] = [shape[0], shape[1] * depth]
        for n in shape[2:]:
            split += [n // f, f]
            reduced.append(n // f)
        order: list[int] = [0, 1] + [3 + 2 * i for i in range(d)] + [2 + 2 * i for i in range(d)]
        return x.reshape(split).permute(order).reshape(reduced)


class SpaceToDepthTrunk(nn.Module):
    """A U-Net run below full resolution: space-to-depth by ``factor`` (no weights: ``(C, H, W) -> (C f^d, H/f,
    W/f)``), the U-Net there, bilinear (trilinear) resizing of its features back to full
    resolution, and the input itself concatenated, so that the light full-resolution head sees every pixel.

    Written here because no library ships this stem for a MONAI ``UNet``; the idea is the space-to-depth stem of
    efficient dense predictors (Shi et al., CVPR 2016, run in reverse). The resizing, not a pixel shuffle, brings the
    features back up: a pixel shuffle gives every one of the ``f^d`` sub-pixel positions its own weights, a lattice at
    the period ``f`` that an adversarial generator could inflate (docs/method.md). About ``f^d`` times less
    arithmetic in the U-Net; output channels: the U-Net's plus the image's.
    """

    def __init__(self, unet: nn.Module, spatial_dims: int, factor: int) -> None:
        super().__init__()
        self.to_depth = _SpaceToDepth(spatial_dims, factor)
        self.unet = unet
        self.up = nn.Upsample(scale_factor=factor, mode=("linear", "bilinear", "trilinear")[spatial_dims - 1],
                              align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.up(self.unet(self.to_depth(x))), x], dim=1)


def _head(
    spatial_dims: int,
    features: int,
    out_channels: int,
    act: str | tuple,
    norm: str | tuple,
    zero_init: bool,
    in_features: int | None = None,
) -> nn.Sequential:
    """A small output head: conv3-norm-act (``in_features`` -> ``features``, default ``features``) then a linear 1x1
    conv to the image channels.

    With ``zero_init`` the last conv starts at zero, so the generator starts as the identity (residual output).
    """
    hidden = Convolution(spatial_dims, in_features or features, features, kernel_size=3, act=act, norm=norm)
    out = Convolution(spatial_dims, features, out_channels, kernel_size=1, conv_only=True)
    if zero_init:
        nn.init.zeros_(out.conv.weight)
        nn.init.zeros_(out.conv.bias)
    return nn.Sequential(hidden, out)


class _Branch(nn.Module):
    """One complete generator (U-Net trunk + head) returning the residual ``delta``."""

    def __init__(self, trunk: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


def _pair_by_name(a: nn.Module, b: nn.Module) -> list[tuple[nn.Parameter, nn.Parameter]]:
    """Parameters with the same name and shape in ``a`` and ``b``."""
    params_b = dict(b.named_parameters())
    return [(p, params_b[n]) for n, p in a.named_parameters() if n in params_b and params_b[n].shape == p.shape]


class SimAdvGenerator(nn.Module):
    """The similar/adversarial generator pair ``x -> (x_s, x_a)`` (Charachon et al. 2020; method.md §2).

    Each branch predicts a residual ``delta`` that is added to ``x`` and mapped into ``out_range``:

    * ``out_activation='sigmoid'`` (default): ``lo + (hi - lo) * sigmoid(logit(u) + delta)`` with ``u = (x - lo) /
      (hi - lo)`` clipped to ``[1e-3, 1 - 1e-3]``. The residual lives in logit space: identity at ``delta = 0``,
      always inside the range and smooth, so no pixel's gradient is cut off (a hard clamp gives zero gradient to
      every pixel pushed past the range, and those pixels can never come back).
    * ``'clamp'``: ``clamp(x + delta, lo, hi)``, the authors' later public code (clips to the image range).
    * ``'ste'``: the same clamp in the forward pass with a straight-through (identity) gradient.

    Args:
        mode: ``'single'`` (Single AE: one shared U-Net trunk, two heads ``head_s`` / ``head_a``), ``'duo'`` (Duo AE:
            two complete networks ``g_s`` / ``g_a``) or ``'naive'`` (``g_a`` only; forward returns ``(x, x_a)``).
        spatial_dims: 2 or 3.
        in_channels: image channels; the outputs have the same number.
        channels: U-Net widths per level (MONAI ``UNet``).
        strides: U-Net down-sampling strides, one fewer than ``channels``.
        num_res_units: residual units per U-Net block.
        head_channels: width of the trunk output / head input; defaults to ``channels[0]``.
        act: activation (MONAI name) for trunk and heads.
        norm: normalisation (MONAI name) for trunk and heads.
        dropout: U-Net dropout.
        upsample: ``"resize"`` (the default since bundle 0.6.0: MONAI ``UNet`` with resize-convolutions,
            :class:`ResizeConvUNet`, no checkerboard lattice for the adversarial generator to exploit), ``"deconv"``
            (MONAI ``UNet``, transposed convolutions; bundle 0.5.0 and earlier) or ``"nontrainable"`` / ``"pixelshuffle"`` (MONAI ``BasicUNet``; ``channels`` then has 5 entries).
        out_range: ``[lo, hi]`` intensity range of the outputs (the image range).
        out_activation: ``'sigmoid'``, ``'clamp'`` or ``'ste'`` (see above).
        zero_init: start every head's last conv at zero so that both outputs start as ``x``.
        same_init: in 'duo' mode, start ``g_s`` with a copy of ``g_a``'s weights (``L_{s,a} = 0`` at step 0).
        space_to_depth: ``1`` (default): the U-Net runs at full resolution. ``f > 1``: it runs at ``1/f`` of it
            (:class:`SpaceToDepthTrunk`; the image's sides must be multiples of ``f`` times the U-Net's total stride)
            and the heads, at full resolution, see its resized features and the image; ``head_channels`` then
            defaults to 8 (the light head).
        map_space: the space of the explanation map (:func:`difference_map`): ``'logit'`` (the default since
            bundle 0.8.0: the generators' change in log-odds, without the image's ``u (1 − u)`` factor) or
            ``'image'`` (the paper's intensity difference). It changes no weight: a checkpoint explains in either.
    """

    def __init__(
        self,
        mode: str = "single",
        spatial_dims: int = 2,
        in_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[int] = (2, 2, 2),
        num_res_units: int = 1,
        head_channels: int | None = None,
        act: str | tuple = "PRELU",
        norm: str | tuple = "INSTANCE",
        dropout: float = 0.0,
        upsample: str = "resize",
        out_range: Sequence[float] = (0.0, 1.0),
        out_activation: str = "sigmoid",
        zero_init: bool = True,
        same_init: bool = False,
        map_space: str = "logit",
        space_to_depth: int = 1,
    ) -> None:
        super().__init__()
        #: the constructor's arguments, so that a checkpoint that does not fit can be matched against the other
        #: decoder (scripts.checkpoint.load_network's hint)
        self.build_kwargs = {
            "mode": mode, "spatial_dims": spatial_dims, "in_channels": in_channels, "channels": tuple(channels),
            "strides": tuple(strides), "num_res_units": num_res_units, "head_channels": head_channels, "act": act,
            "norm": norm, "dropout": dropout, "upsample": upsample, "out_range": tuple(out_range),
            "out_activation": out_activation, "zero_init": zero_init, "same_init": same_init,
            "map_space": map_space, "space_to_depth": space_to_depth,
        }
        if mode not in GENERATOR_MODES:
            raise BundleInputError(f"generator 'mode' must be one of {GENERATOR_MODES}, got {mode!r}")
        if out_activation not in OUT_ACTIVATIONS:
            raise BundleInputError(
                f"generator 'out_activation' must be one of {OUT_ACTIVATIONS}, got {out_activation!r}"
            )
        if map_space not in MAP_SPACES:
            raise BundleInputError(f"generator 'map_space' must be one of {MAP_SPACES}, got {map_space!r}")
        if isinstance(space_to_depth, bool) or not isinstance(space_to_depth, int) or space_to_depth < 1:
            raise BundleInputError(f"generator 'space_to_depth' must be an integer >= 1, got {space_to_depth!r}")
        if len(out_range) != 2 or not float(out_range[0]) < float(out_range[1]):
            raise BundleInputError(f"generator 'out_range' must be [lo, hi] with lo < hi, got {list(out_range)}")
        self.mode = mode
        self.spatial_dims = spatial_dims
        self.out_activation = out_activation
        self.map_space = map_space
        self.out_range = (float(out_range[0]), float(out_range[1]))
        self.logit_eps = _LOGIT_EPS
        f = space_to_depth
        feat = int(head_channels or (channels[0] if f == 1 else 8))

        def trunk() -> nn.Module:
            unet = _unet(spatial_dims, in_channels * f**spatial_dims, feat, channels, strides, num_res_units, act, norm,
                         dropout, upsample)
            return unet if f == 1 else SpaceToDepthTrunk(unet, spatial_dims, f)

        def head() -> nn.Sequential:
            return _head(spatial_dims, feat, in_channels, act, norm, zero_init,
                         in_features=feat if f == 1 else feat + in_channels)

        # Every mode defines all five submodule names (None where absent): TorchScript then prunes the branches
        # of the other modes, so the network scripts (``monai.bundle ckpt_export``) in every mode.
        self.trunk: nn.Module | None = trunk() if mode == "single" else None
        self.head_s: nn.Module | None = head() if mode == "single" else None
        self.head_a: nn.Module | None = head() if mode == "single" else None
        self.g_s: nn.Module | None = _Branch(trunk(), head()) if mode == "duo" else None
        self.g_a: nn.Module | None = _Branch(trunk(), head()) if mode != "single" else None
        if self.g_s is not None and self.g_a is not None and same_init:
            self.g_s.load_state_dict(self.g_a.state_dict())

    def _output(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Map the residual ``delta`` to an image in ``out_range`` (see the class docstring)."""
        lo, hi = self.out_range
        if self.out_activation == "sigmoid":
            u = torch.logit((x - lo) / (hi - lo), eps=self.logit_eps)
            return lo + (hi - lo) * torch.sigmoid(u + delta)
        y = x + delta
        if self.out_activation == "clamp":
            return y.clamp(lo, hi)
        return y + (y.clamp(lo, hi) - y).detach()  # straight-through estimator

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(x_s, x_a)``, both shaped like ``x``; in naive mode ``x_s`` is ``x`` itself."""
        return self.generate(x)

    def generate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_s, x_a)`` (see :meth:`forward`); a separate method so subclasses can reuse it under TorchScript."""
        if self.trunk is not None and self.head_s is not None and self.head_a is not None:
            features = self.trunk(x)
            return self._output(x, self.head_s(features)), self._output(x, self.head_a(features))
        assert self.g_a is not None
        x_a = self._output(x, self.g_a(x))
        if self.g_s is None:
            return x, x_a
        return self._output(x, self.g_s(x)), x_a

    def explanation(self, x_s: torch.Tensor, x_a: torch.Tensor) -> torch.Tensor:
        """The map of ``(x_s, x_a)`` in this generator's ``map_space`` (:func:`difference_map`)."""
        lo, hi = self.out_range
        return _space_difference(x_s, x_a, self.map_space == "logit", lo, hi, self.logit_eps)

    def paired_parameters(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        """``(theta_s, theta_a)`` pairs penalised by ``L_{s,a}`` (method.md §2): the heads ('single'), every parameter
        of ``g_s`` / ``g_a`` ('duo'), none ('naive')."""
        if self.mode == "single":
            return _pair_by_name(self.head_s, self.head_a)
        if self.mode == "duo":
            return _pair_by_name(self.g_s, self.g_a)
        return []


class MaskGeneratorNet(nn.Module):
    """Real-time saliency masker (Dabkowski & Gal, NeurIPS 2017), a method.md §4 baseline.

    A MONAI ``UNet`` predicts one mask logit map per class; the class selector of the paper is implemented by
    picking channel ``class_idx[i]`` for sample ``i`` (instead of embedding the class at the bottleneck), then a
    sigmoid gives the mask in ``[0, 1]``. As in the paper, the mask is coarse: with ``mask_scale = s`` the selected
    logits are area-averaged to ``1/s`` of the input size before the sigmoid and the mask is upsampled (bi/trilinear)
    back to it (the paper's masker outputs 56x56 for a 224x224 input, ``s = 4``). A full-resolution mask
    (``s = 1``) can learn a pixel-period pattern that fools the classifier through the blur composite instead of
    covering the evidence: on the default data it did, and scored below a random map at IoU@95/98 (docs/results.md).

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        num_classes: number of classifier classes ``K``.
        channels: U-Net widths per level.
        strides: U-Net strides, one fewer than ``channels``.
        num_res_units: residual units per U-Net block.
        act: activation (MONAI name).
        norm: normalisation (MONAI name).
        dropout: U-Net dropout.
        mask_scale: the mask's down-sampling factor ``s`` (1: full resolution; see above).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        channels: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[int] = (2, 2, 2),
        num_res_units: int = 1,
        act: str | tuple = "PRELU",
        norm: str | tuple = "INSTANCE",
        dropout: float = 0.0,
        mask_scale: int = 4,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise BundleInputError(f"mask generator 'num_classes' must be >= 1, got {num_classes}")
        if isinstance(mask_scale, bool) or not isinstance(mask_scale, (int, float)) or int(mask_scale) != mask_scale \
                or mask_scale < 1:
            raise BundleInputError(f"mask generator 'mask_scale' must be an integer >= 1, got {mask_scale!r}")
        self.num_classes = num_classes
        self.mask_scale = int(mask_scale)
        self.unet = _unet(spatial_dims, in_channels, num_classes, channels, strides, num_res_units, act, norm, dropout)

    def forward(self, x: torch.Tensor, class_idx: torch.Tensor | int) -> torch.Tensor:
        """Return the ``(B, 1, *spatial)`` mask in ``[0, 1]`` of class ``class_idx[i]`` for sample ``i``."""
        logits = self.unet(x)
        b = logits.shape[0]
        idx = torch.as_tensor(class_idx, device=logits.device).long().reshape(-1).expand(b)
        selected = logits[torch.arange(b, device=logits.device), idx].unsqueeze(1)
        if self.mask_scale == 1:
            return torch.sigmoid(selected)
        spatial = selected.shape[2:]
        coarse = [max(1, -(-int(n) // self.mask_scale)) for n in spatial]  # ceil(n / s)
        mask = torch.sigmoid(nn.functional.interpolate(selected, size=coarse, mode="area"))
        linear = ("linear", "bilinear", "trilinear")[len(spatial) - 1]
        return nn.functional.interpolate(mask, size=list(spatial), mode=linear, align_corners=False)


class SimAdvExplanationNet(SimAdvGenerator):
    """The deployable explainer: ``x -> E(x) = Σ_c |g_s(x) − g_a(x)|`` in the generator's ``map_space``, ``(B, 1, *spatial)``.

    Same parameters (and state-dict keys) as :class:`SimAdvGenerator`, so ``models/explainer.pt`` loads into it
    directly; this is the bundle's ``network_def`` for ``verify_net_in_out`` and ``ckpt_export`` (one output
    tensor, as MONAI's bundle tools expect).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x_s, x_a = self.generate(x)
        return self.explanation(x_s, x_a)
