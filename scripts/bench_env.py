"""The card and software versions every benchmark and GPU check records (imported by the scripts beside it)."""
from __future__ import annotations

import datetime
import platform

import torch
import triton

from app.kernels import backend_name


def environment(device: torch.device) -> dict:
    """Device name, ConvTranspose3d backend, torch / Triton / cuDNN / CUDA / Python versions and the UTC date."""
    cuda = device.type == "cuda"
    return {
        "device": torch.cuda.get_device_name(device) if cuda else f"CPU ({platform.processor() or 'cpu'})",
        "backend": backend_name(device),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
