"""Write small sr3d checkpoints the way training stores them (Lightning layout, plain hyper-parameters)."""

from __future__ import annotations

from pathlib import Path

import torch

from app.nn.lightning_module import SRLightningModule


def write_checkpoint(path: Path, scale=(2, 2, 2), detail_gain: float = 1.0, seed: int = 0) -> Path:
    """A randomly initialised tiny SR U-Net saved as {"state_dict", "hyper_parameters"}.

    ``detail_gain`` scales the output convolution: 0 makes the net exactly its trilinear residual path.
    """
    torch.manual_seed(seed)
    module = SRLightningModule(
        model={"spatial_dims": 3, "in_channels": 1, "out_channels": 1, "channels": [4, 8], "strides": [2],
               "scale": list(scale), "upsample": "torch", "num_res_units": 1},
        intensity={"lower_percentile": 0.5, "upper_percentile": 99.5},
        degradation={"profile": "box", "noise_std": 0.0, "kspace_fraction": None},
    )
    with torch.no_grad():
        for p in module.net.out.parameters():
            p.mul_(detail_gain)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path
