"""``TritonConvTranspose3d``: ``nn.ConvTranspose3d`` whose forward and backward run the Triton kernels."""
from __future__ import annotations

import torch
from torch import nn

from app.kernels.functional import conv_transpose3d


class TritonConvTranspose3d(nn.ConvTranspose3d):
    """Drop-in for ``nn.ConvTranspose3d``: same constructor arguments, parameters, initialisation and
    ``state_dict`` keys (so state dicts load both ways); x (N, C_in, D, H, W) -> (N, C_out, OD, OH, OW)."""

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            raise ValueError("Only 'zeros' padding mode is supported for ConvTranspose3d")
        num_spatial_dims = 3
        output_padding = self._output_padding(
            input, output_size, self.stride, self.padding, self.kernel_size, num_spatial_dims, self.dilation
        )
        return conv_transpose3d(input, self.weight, self.bias, self.stride, self.padding, output_padding,
                                self.groups, self.dilation)
