"""3D super-resolution U-Net: MONAI residual blocks at LR, transposed-conv upsampling (Triton or torch),
an extra upsampling stage to the HR grid (stride = scale per axis), global residual over trilinear input."""
from __future__ import annotations

import math
from collections.abc import Sequence
from enum import Enum

import torch
import torch.nn.functional as F
from monai.networks.blocks import ADN, Convolution, ResidualUnit
from torch import nn

IntOrTriple = int | Sequence[int]


class UpsampleMode(str, Enum):
    """Which layer the decoder's transposed convolutions use."""

    TRITON = "triton"  # app.kernels.TritonConvTranspose3d (Triton on CUDA, torch's op on CPU)
    TORCH = "torch"  # nn.ConvTranspose3d (cuDNN on CUDA)


def _triple(value: IntOrTriple) -> tuple[int, int, int]:
    triple = (int(value),) * 3 if isinstance(value, int) else tuple(int(v) for v in value)
    if len(triple) != 3 or min(triple) < 1:
        raise ValueError(f"expected a positive int or 3 positive ints, got {value!r}")
    return triple  # type: ignore[return-value]


def transposed_conv(mode: UpsampleMode, in_channels: int, out_channels: int, stride: Sequence[int]) -> nn.ConvTranspose3d:
    """ConvTranspose3d with kernel = stride (each input voxel paints one disjoint output block)."""
    if mode is UpsampleMode.TRITON:
        from app.kernels import TritonConvTranspose3d  # here, so upsample="torch" needs no Triton install

        return TritonConvTranspose3d(in_channels, out_channels, kernel_size=stride, stride=stride)
    return nn.ConvTranspose3d(in_channels, out_channels, kernel_size=stride, stride=stride)


class SRUNet(nn.Module):
    """x (B, in_channels, X, Y, Z) LR -> (B, out_channels, sx*X, sy*Y, sz*Z).

    ``channels[i]`` features at level i; level i+1 is reached with ``strides[i]`` (int or per axis), so
    X, Y, Z must be divisible by the product of the strides. With ``residual`` the net predicts the
    detail added to the trilinear interpolation of the input (align_corners=False: the centred grid).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int],
        strides: Sequence[IntOrTriple],
        scale: IntOrTriple,
        upsample: str = "triton",
        kernel_size: int = 3,
        num_res_units: int = 2,
        act: str = "PRELU",
        norm: str | None = None,
        dropout: float = 0.0,
        residual: bool = True,
    ):
        super().__init__()
        if spatial_dims != 3:
            raise ValueError(f"SRUNet is 3D only, got spatial_dims={spatial_dims}")
        if len(channels) < 1 or len(strides) != len(channels) - 1:
            raise ValueError(f"need len(strides) == len(channels) - 1, got channels={list(channels)}, strides={list(strides)}")
        if residual and in_channels != out_channels:
            raise ValueError(f"residual=True needs in_channels == out_channels, got {in_channels} and {out_channels}")
        if upsample not in {m.value for m in UpsampleMode}:
            raise ValueError(f"upsample must be one of {[m.value for m in UpsampleMode]}, got {upsample!r}")
        self.mode = UpsampleMode(upsample)
        self.scale = _triple(scale)
        self.strides = [_triple(s) for s in strides]
        self.divisor = tuple(math.prod(s[axis] for s in self.strides) for axis in range(3))
        self.residual = residual
        block = dict(spatial_dims=3, kernel_size=kernel_size, act=act, norm=norm, dropout=dropout)

        def res_unit(cin: int, cout: int, stride: IntOrTriple = 1) -> nn.Module:
            if num_res_units > 0:
                return ResidualUnit(in_channels=cin, out_channels=cout, strides=stride, subunits=num_res_units, **block)
            return Convolution(in_channels=cin, out_channels=cout, strides=stride, **block)

        def up(cin: int, cout: int, stride: Sequence[int]) -> nn.Sequential:
            return nn.Sequential(transposed_conv(self.mode, cin, cout, stride),
                                 ADN(ordering="NDA", in_channels=cout, act=act, norm=norm, norm_dim=3, dropout=dropout))

        self.head = res_unit(in_channels, channels[0])
        self.down = nn.ModuleList(res_unit(channels[i], channels[i + 1], self.strides[i]) for i in range(len(self.strides)))
        self.up = nn.ModuleList(up(channels[i + 1], channels[i], self.strides[i]) for i in range(len(self.strides)))
        self.fuse = nn.ModuleList(res_unit(2 * channels[i], channels[i]) for i in range(len(self.strides)))
        self.to_hr = up(channels[0], channels[0], self.scale)
        self.out = Convolution(3, channels[0], out_channels, kernel_size=kernel_size, conv_only=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or any(n % d for n, d in zip(x.shape[2:], self.divisor)):
            raise ValueError(f"expected (B, C, X, Y, Z) with X, Y, Z divisible by {self.divisor}, got {tuple(x.shape)}")
        skips = [self.head(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        h = skips.pop()
        for level in reversed(range(len(self.up))):
            h = self.fuse[level](torch.cat([self.up[level](h), skips[level]], dim=1))
        h = self.out(self.to_hr(h))
        if self.residual:
            h = h + F.interpolate(x, scale_factor=self.scale, mode="trilinear", align_corners=False)
        return h


def upsample_backend(net: SRUNet, device: torch.device | str) -> str:
    """Which code runs ``net``'s transposed convolutions on ``device`` (for the start-up log line)."""
    if net.mode is UpsampleMode.TORCH:
        return "torch nn.ConvTranspose3d"
    from app.kernels import backend_name

    return f"TritonConvTranspose3d -> {backend_name(device)}"
