"""Triton 3D transposed convolution: functional op, module, and backend query."""
from app.kernels.functional import PRECISIONS, backend_name, conv_transpose3d, uses_triton
from app.kernels.module import TritonConvTranspose3d

__all__ = ["PRECISIONS", "TritonConvTranspose3d", "backend_name", "conv_transpose3d", "uses_triton"]
