"""SR U-Net shapes/residual, Triton vs torch upsampling (interpreter on CPU), checkpoint loading contract."""
from __future__ import annotations

import pickle

import pytest
import torch
from omegaconf import OmegaConf

from app.kernels import TritonConvTranspose3d, uses_triton
from app.nn.checkpoint import CheckpointError, load_sr_model
from app.nn.lightning_module import SRLightningModule
from app.nn.unet import SRUNet

TINY = dict(spatial_dims=3, in_channels=1, out_channels=1, channels=[2, 4], strides=[2], num_res_units=1)
META = dict(intensity={"lower_percentile": 0.5, "upper_percentile": 99.5},
            degradation={"profile": "gaussian", "noise_std": 0.0, "kspace_fraction": None})


@pytest.mark.parametrize(("scale", "strides", "lr_shape"), [
    ([2, 2, 2], [2, 2], (4, 8, 12)),
    ([1, 1, 4], [[2, 2, 1], [2, 2, 2]], (8, 4, 2)),
    ([3, 1, 2], [2], (2, 4, 6)),
])
def test_unet_output_is_on_the_hr_grid(scale, strides, lr_shape, torch_cpu_ops):
    net = SRUNet(3, 1, 1, channels=[3, 4, 5][: len(strides) + 1], strides=strides, scale=scale, upsample="torch")
    x = torch.randn(2, 1, *lr_shape)
    y = net(x)
    assert y.shape == (2, 1, *(n * s for n, s in zip(lr_shape, scale)))
    y.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_unet_residual_is_centred_trilinear_and_input_checked():
    net = SRUNet(scale=[2, 2, 2], upsample="torch", **TINY)
    with torch.no_grad():
        for p in net.out.parameters():
            p.zero_()
    x = torch.arange(4.0).reshape(1, 1, 4, 1, 1).expand(1, 1, 4, 2, 2).contiguous()
    y = net(x)
    # centred grid: HR voxel j sits at LR coordinate (j + 0.5) / 2 - 0.5
    expected = torch.tensor([0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0])
    torch.testing.assert_close(y[0, 0, :, 0, 0], expected)
    with pytest.raises(ValueError, match="divisible"):
        net(torch.randn(1, 1, 3, 2, 2))
    with pytest.raises(ValueError, match="upsample must be one of"):
        SRUNet(scale=[2, 2, 2], upsample="cudnn", **TINY)
    with pytest.raises(ValueError, match="strides"):
        SRUNet(3, 1, 1, channels=[2, 4], strides=[2, 2], scale=2)


def _output_and_gradients(model, net: SRUNet, x: torch.Tensor) -> list[torch.Tensor]:
    """[y, grad of x, grads of net's parameters] of ``model`` (net or a compiled net) for a fixed weighting of y."""
    net.zero_grad()
    x = x.clone().requires_grad_(True)
    y = model(x)
    (y * torch.linspace(-1, 1, y.numel(), device=y.device, dtype=y.dtype).reshape(y.shape)).sum().backward()
    return [y.detach(), x.grad] + [p.grad.clone() for p in net.parameters()]


def test_triton_upsampling_matches_torch_forward_and_backward():
    """Under TRITON_INTERPRET=1 (tests/conftest.py) the Triton kernels run on CPU; on a GPU they run natively."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    ref = SRUNet(scale=[2, 1, 2], upsample="torch", **TINY).to(device).double()
    tri = SRUNet(scale=[2, 1, 2], upsample="triton", **TINY).to(device).double()
    assert sum(isinstance(m, TritonConvTranspose3d) for m in tri.modules()) == 2
    tri.load_state_dict(ref.state_dict())
    x = torch.randn(2, 1, 4, 2, 4, device=device, dtype=torch.float64)
    assert uses_triton(x), "Triton kernels are not active: TRITON_INTERPRET=1 must be set before triton is imported"
    for got, want in zip(_output_and_gradients(tri, tri, x), _output_and_gradients(ref, ref, x)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_compiled_unet_with_triton_upsampling_is_one_graph_and_matches_eager():
    """torch.compile(fullgraph=True) of the whole U-Net: the Triton layers enter the graph as the custom op, so a
    training step can be compiled (or CUDA-graphed) end to end; outputs and gradients as in eager mode."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    torch._dynamo.reset()
    net = SRUNet(scale=[2, 1, 2], upsample="triton", **TINY).to(device).double()
    x = torch.randn(2, 1, 4, 2, 4, device=device, dtype=torch.float64)
    eager = _output_and_gradients(net, net, x)
    compiled = _output_and_gradients(torch.compile(net, backend="aot_eager", fullgraph=True), net, x)
    for got, want in zip(compiled, eager):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def _save_module(path, model: dict) -> None:
    module = SRLightningModule(model=model, **META)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)


def test_load_sr_model_round_trip(tmp_path):
    model = dict(TINY, scale=[1, 2, 2], upsample="triton")
    torch.manual_seed(1)
    _save_module(tmp_path / "m.ckpt", model)
    net, meta = load_sr_model(tmp_path / "m.ckpt")
    assert meta == {"scale": [1, 2, 2], "intensity": META["intensity"], "model": model, "degradation": META["degradation"]}
    assert not net.training
    reference = SRLightningModule(model=model, **META)
    reference.load_state_dict(torch.load(tmp_path / "m.ckpt", weights_only=True)["state_dict"])
    x = torch.randn(1, 1, 4, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(net(x), reference.net(x))


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize("content", ["garbage", "foreign", "pickle", "target", "weights"])
def test_load_sr_model_rejects_bad_files(tmp_path, content):
    path = tmp_path / "bad.ckpt"
    if content == "garbage":
        path.write_bytes(b"\x00not a checkpoint")
    elif content == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(1)}, "epoch": 3}, path)
    elif content == "pickle":
        path.write_bytes(pickle.dumps({"state_dict": {}, "hyper_parameters": _Evil()}))
    elif content == "target":
        model = dict(TINY, scale=2, _target_="os.system")
        torch.save({"state_dict": {}, "hyper_parameters": dict(model=model, **META)}, path)
    else:
        _save_module(path, dict(TINY, scale=[2, 2, 2]))
        ckpt = torch.load(path, weights_only=True)
        ckpt["hyper_parameters"]["model"]["channels"] = [3, 4]
        torch.save(ckpt, path)
    with pytest.raises(CheckpointError) as info:
        load_sr_model(path)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_target_in_a_checkpoint_is_never_instantiated(tmp_path):
    """Hydra-style ``_target_`` entries anywhere in a checkpoint's hyper-parameters are data, never code."""
    from app.evaluate import _degradation

    marker = tmp_path / "pwned"
    target = {"_target_": "os.system", "command": f"touch {marker}"}
    path = tmp_path / "t.ckpt"
    _save_module(path, dict(TINY, scale=[2, 2, 2]))
    ckpt = torch.load(path, weights_only=True)
    ckpt["hyper_parameters"].update(optimizer=target, extra=target)
    ckpt["hyper_parameters"]["degradation"] = {**META["degradation"], **target}
    torch.save(ckpt, path)
    net, meta = load_sr_model(path)  # only SRUNet is built; the rest is read as plain values
    assert isinstance(net, SRUNet)
    with pytest.raises(ValueError, match="unknown keys"):  # evaluate refuses a degradation it does not know
        _degradation(OmegaConf.create({"degradation": None}), meta)
    assert not marker.exists()
