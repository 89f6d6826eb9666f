"""Shared by the GPU check and the benchmarks beside it: the environment record, autotune pinning, the
backward's channels_last_3d-copy threshold and torch.profiler op times."""
from __future__ import annotations

import contextlib
import datetime
import platform
import sys
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType

import torch
import triton
from torch.autograd.profiler_util import EventList
from torch.profiler import ProfilerActivity, profile
from triton.runtime.autotuner import Autotuner

import app.kernels.functional as functional
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


def autotuners(extra_modules: Sequence[ModuleType] = ()) -> dict[str, Autotuner]:
    """Every Triton autotuner defined in the ``app.kernels`` modules and in ``extra_modules``, by variable name
    (one kernel can have several, e.g. grad_weight's per C_in tile width)."""
    modules = [m for n, m in list(sys.modules.items()) if n == "app.kernels" or n.startswith("app.kernels.")]
    found: dict[str, Autotuner] = {}
    for module in [*modules, *extra_modules]:
        found.update({name: v for name, v in vars(module).items()
                      if isinstance(v, Autotuner) and v not in found.values()})
    return found


def autotune_choices() -> dict[str, list[dict]]:
    """The configuration each app autotuner chose per key so far (autotuner name -> [{key, config}]): which of the
    listed configurations win, for pruning the lists."""
    return {name: [
        {"key": [str(k) for k in key],
         "config": {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages}}
        for key, config in tuner.cache.items()] for name, tuner in autotuners().items()}


@contextlib.contextmanager
def pinned_configs(index: int | None, extra_modules: Sequence[ModuleType] = ()) -> Iterator[None]:
    """Pin every autotuner to its configuration ``index`` (modulo its count): no benchmarking and one compilation
    per kernel. ``None`` leaves autotuning on."""
    if index is None:
        yield
        return
    saved = [(tuner, tuner.configs) for tuner in autotuners(extra_modules).values()]
    try:
        for tuner, configs in saved:
            tuner.configs = [configs[index % len(configs)]]
        yield
    finally:
        for tuner, configs in saved:
            tuner.configs = configs


@contextlib.contextmanager
def channels_last_backward_from(numel: float) -> Iterator[None]:
    """NCDHW backwards of every geometry run on channels_last_3d copies from ``numel`` grad_output elements (0: all
    of them, ``math.inf``: none), instead of ``functional.CHANNELS_LAST_BACKWARD_MIN_NUMEL``."""
    saved = functional.CHANNELS_LAST_BACKWARD_MIN_NUMEL
    functional.CHANNELS_LAST_BACKWARD_MIN_NUMEL = dict.fromkeys(saved, numel)
    try:
        yield
    finally:
        functional.CHANNELS_LAST_BACKWARD_MIN_NUMEL = saved


def profile_ops(fn: Callable[[], object], device: torch.device, runs: int = 1) -> EventList:
    """torch.profiler's per-op averages (``key_averages``) of ``runs`` more calls of ``fn`` (already warm): CPU ops,
    and on a GPU its kernels too (Triton's under their function names)."""
    cuda = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]) as prof:
        for _ in range(runs):
            fn()
        if cuda:
            torch.cuda.synchronize(device)
    return prof.key_averages()


def own_time_attribute(device: torch.device) -> str:
    """The FunctionEventAvg field of an op's own time: device time on a GPU, CPU time without one."""
    return "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"


def own_times_us(fn: Callable[[], object], device: torch.device, runs: int = 5, top: int = 8) -> dict[str, float]:
    """The ``top`` largest own times per call of ``fn`` by op / kernel name, in µs (device time on a GPU)."""
    attr = own_time_attribute(device)
    times = {e.key: getattr(e, attr) / runs for e in profile_ops(fn, device, runs) if getattr(e, attr) > 0}
    return dict(sorted(times.items(), key=lambda kv: -kv[1])[:top])
