"""Test-session setup. Without a GPU, Triton kernels can only run in its interpreter, and Triton decides that
when a kernel is decorated, so ``TRITON_INTERPRET=1`` is set here before anything imports triton. CPU tensors
then run the Triton kernels; a test that wants torch's CPU operator instead (as a real CPU run uses) sets
``TRITON_INTERPRET=0`` with ``monkeypatch.setenv`` — dispatch reads the variable at call time."""
import os
import shutil

import pytest

if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def torch_cpu_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    """Route CPU tensors to torch's operators (what a real CPU run does) instead of the Triton interpreter."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
