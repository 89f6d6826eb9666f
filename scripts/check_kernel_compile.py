"""Compile every Triton kernel of ``app.kernels`` for an H100/H200 (sm_90) on a machine without a GPU, with each
autotune configuration, in fp32 (TF32) and bf16: proof that every configuration compiles (the interpreter runs
none of Triton's compiler passes) and fits a block's shared memory (measured, not estimated), as a pinned launch
needs. Arguments are specialised as a launch on contiguous tensors would be (pointers and sizes 16-divisible, unit
W strides, or unit channel strides for the channels_last_3d variants). ``--memory-ops`` also counts each compiled
kernel's global-memory instructions in its PTX: whether loads are 16-byte and asynchronous (``cp.async``, which
Triton pipelines) or scalar ``ld.global``, a prediction the interpreter cannot make.
Run without ``TRITON_INTERPRET=1``:  python scripts/check_kernel_compile.py [--first] [--memory-ops]"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.runtime.autotuner import Autotuner  # noqa: E402

from app.kernels import triton_kernels as tk  # noqa: E402

HOPPER = GPUTarget("cuda", 90, 64)
SHARED_MEMORY_LIMIT = 232448  # bytes per block on H100 / H200
K2S2 = dict(KD=2, KH=2, KW=2, SD=2, SH=2, SW=2, PD=0, PH=0, PW=0, DD=1, DH=1, DW=1)
K3S2P1 = dict(KD=3, KH=3, KW=3, SD=2, SH=2, SW=2, PD=1, PH=1, PW=1, DD=1, DH=1, DW=1)
BOX = dict(W_P2=64, H_P2=64)
U_MAX, U = tk._phase_shifts(4, 2, 1)
PHASE_K4S2P1 = dict(**tk._geometry((4, 4, 4), (2, 2, 2), (1, 1, 1), None), **{f"U{a}": U for a in "DHW"},
                    **{f"U{a}_MAX": U_MAX for a in "DHW"})
WGRAD = dict(**K2S2, TAP_FASTEST=True, IN_BOUNDS=True, SUM_BIAS=True, BOXES=True, W_P2=16, H_P2=16)
WGRAD_TMA_GEOMETRY = ("KD", "KH", "SD", "SH", "PD", "PH", "UW", "UD_MAX", "UH_MAX", "UW_MAX")
# TMA descriptor arguments per kernel: their block shapes from the constexprs
DESC_BLOCKS = {
    "_fwd_phase_tma_kernel": {"x_desc": lambda v: [1, 1, v["BOX_H"], v["BOX_W"], v["BLOCK_K"]],
                              "w_desc": lambda v: [v["BLOCK_N"], v["BLOCK_K"]] if v["W_K_MAJOR"] else
                              [v["BLOCK_K"], v["BLOCK_N"]],
                              "y_desc": lambda v: [1, v["BOX_H"], 1, v["BOX_W"], v["BLOCK_N"]]},
    "_bwd_input_tma_kernel": {"g_desc": lambda v: [1, v["BOX_H"], 1, v["BOX_W"], v["BLOCK_K"]],
                              "w_desc": lambda v: [v["BLOCK_N"], v["BLOCK_K"]],
                              "gx_desc": lambda v: [1, 1, v["BOX_H"], v["BOX_W"], v["BLOCK_N"]]},
    "_bwd_weight_tma_kernel": {"x_desc": lambda v: [1, 1, 1, v["BLOCK_W"], v["BLOCK_CI"]],
                               "g_desc": lambda v: [1, 1, 1, v["BLOCK_W"], v["BLOCK_N"]]},
}
# the host's widest tiles, BLOCK_N and BLOCK_K halved in fp32, whose weight is K-major
FWD_TMA = dict(KD=4, KH=4, SD=2, SH=2, PD=1, PH=1, UD=U, UH=U, UW=U, UD_MAX=U_MAX, UH_MAX=U_MAX, UW_MAX=U_MAX,
               W_K_MAJOR=lambda dtype: dtype == "fp32", HAS_BIAS=True, BOX_H=4, BOX_W=32,
               BLOCK_N=lambda dtype: tk._fwd_tma_tile(torch.float32 if dtype == "fp32" else torch.bfloat16)[1],
               BLOCK_K=lambda dtype: tk._fwd_tma_tile(torch.float32 if dtype == "fp32" else torch.bfloat16)[2])
WGRAD_POINTERS, WGRAD_INTS = ("part_ptr", "bias_part_ptr"), ("P", "CHUNK")
NCDHW_UNIT = ("sxw", "syw", "sgw", "sww")  # W strides of NCDHW tensors (and of a weight's last axis)
CL_UNIT = ("sxc", "syc", "sgc")  # channel strides of channels_last_3d x, y and grad_y
# (autotuner, constexprs besides dtype flags and its configurations' block sizes, fp32 pointers, unsplit ints,
#  unit strides)
KERNELS = [
    (tk._fwd_tuned, dict(**K3S2P1, TSD=2, TSH=2, TSW=2, HAS_BIAS=True), (), (), NCDHW_UNIT),
    (tk._fwd_gemm_tuned, dict(KD=2, KH=2, KW=2, **BOX, INTERLEAVE_W=True, W_FLAT=True, HAS_BIAS=True), (), ("T",),
     NCDHW_UNIT),
    (tk._fwd_phase_gemm_tuned, dict(**PHASE_K4S2P1, W_P2=32, H_P2=128, Y_CL=False, W_EXACT=True, HAS_BIAS=True), (),
     ("T",), NCDHW_UNIT),
    (tk._fwd_phase_gemm_tuned, dict(**PHASE_K4S2P1, W_P2=32, H_P2=128, Y_CL=True, W_EXACT=True, HAS_BIAS=True), (),
     ("T",), CL_UNIT),
    (tk._bwd_input_tuned, dict(**K3S2P1), (), ("M",), NCDHW_UNIT),
    (tk._bwd_input_gemm_tuned, dict(KD=2, KH=2, KW=2, **BOX, W_FLAT=True), (), ("T",), NCDHW_UNIT),
    (tk._bwd_weight_tuned, {**WGRAD, **dict(zip(("BLOCK_CI", "BLOCK_N"), tk._WGRAD_TILE))}, WGRAD_POINTERS,
     WGRAD_INTS, NCDHW_UNIT),
    (tk._bwd_weight_wide_tuned, {**WGRAD, **dict(zip(("BLOCK_CI", "BLOCK_N"), tk._WGRAD_WIDE_TILE))},
     WGRAD_POINTERS, WGRAD_INTS, NCDHW_UNIT),
    (tk._fwd_phase_tma_tuned, FWD_TMA, (), (), ()),
    (tk._bwd_input_tma_tuned, {k: v for k, v in FWD_TMA.items() if k not in ("HAS_BIAS", "W_K_MAJOR")}, (), (), ()),
    (tk._bwd_weight_tma_tuned, dict(**{k: v for k, v in PHASE_K4S2P1.items() if k in WGRAD_TMA_GEOMETRY},
                                    **dict(zip(("BLOCK_CI", "BLOCK_N", "BLOCK_W"), tk._WGRAD_TMA_TILE))),
     ("part_ptr",), ("STEPS", "CHUNK"), ()),
    # no autotuner: grad_bias launches it with tiles of _CHANNEL_SUM_TILE elements, BLOCK_C 16 to 64
    (SimpleNamespace(fn=tk._channel_sum_kernel, configs=[
        triton.Config({"BLOCK_R": tk._CHANNEL_SUM_TILE // bc, "BLOCK_C": bc}) for bc in (16, 64)]),
     {}, ("part_ptr",), ("M", "CHUNK"), ()),
]


def compile_one(tuner: Autotuner, constexprs: dict, fp32_ptrs: tuple, free_ints: tuple, unit_strides: tuple,
                config: triton.Config, dtype: str) -> triton.compiler.CompiledKernel:
    """``tuner``'s kernel compiled for sm_90 with ``config`` on ``dtype`` tensors."""
    fn = tuner.fn
    values = {**constexprs, **config.kwargs, "INDEX_64": False, "IS_FP64": False,
              "IS_FP32": dtype == "fp32", "PRECISION": "tf32", "UPCAST": False}
    values.update({name: value(dtype) for name, value in values.items() if callable(value)})  # per-dtype tiles
    signature, consts, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in values or name in unit_strides:
            signature[name] = "constexpr"
            consts[(i,)] = values.get(name, 1)
            continue
        if name in DESC_BLOCKS.get(fn.__name__, {}):
            signature[name] = f"tensordesc<{dtype}{DESC_BLOCKS[fn.__name__][name](values)}>"
            continue
        if name.endswith("_ptr"):
            signature[name] = "*fp32" if dtype == "fp32" or name in fp32_ptrs else "*bf16"
        else:
            signature[name] = "i32"
        if name not in free_ints:
            attrs[(i,)] = [["tt.divisibility", 16]]
    return triton.compile(ASTSource(fn, signature, constexprs=consts, attrs=attrs), target=HOPPER,
                          options={"num_warps": config.num_warps, "num_stages": config.num_stages})


def memory_ops(ptx: str) -> str:
    """Counts of the global-memory instructions in ``ptx`` by opcode and width, e.g. 'cp.async.cg.shared.global 15,
    ld.global.b16 40, st.global.v4.b32 4'."""
    counts: dict[str, int] = {}
    for op in re.findall(r"\b(?:ld\.global|st\.global|cp\.async\.c[ag]\.shared\.global|cp\.async\.bulk\.tensor)[\w.:]*",
                         ptx):
        counts[op] = counts.get(op, 0) + 1
    return ", ".join(f"{op} {n}" for op, n in sorted(counts.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", action="store_true", help="only each autotuner's first configuration")
    parser.add_argument("--memory-ops", action="store_true",
                        help="also print each kernel's global loads and stores by width (from its PTX)")
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        print("unset TRITON_INTERPRET: the interpreter compiles nothing", file=sys.stderr)
        return 2
    failures, worst, start = [], 0, time.perf_counter()
    listed = [entry[0] for entry in KERNELS]
    failures += [f"autotuner {name} is not in KERNELS" for name, value in vars(tk).items()
                 if isinstance(value, Autotuner) and value not in listed]
    print(f"Triton {triton.__version__}, target sm_90, shared memory limit {SHARED_MEMORY_LIMIT} B")
    for tuner, constexprs, fp32_ptrs, free_ints, unit_strides in KERNELS:
        for config in tuner.configs[:1] if args.first else tuner.configs:
            for dtype in ("fp32", "bf16"):
                label = f"{tuner.fn.__name__} {dtype} {'CL ' if unit_strides == CL_UNIT else ''}{config}"
                try:
                    kernel = compile_one(tuner, constexprs, fp32_ptrs, free_ints, unit_strides, config, dtype)
                except Exception as error:  # noqa: BLE001 (every compiler error is a finding)
                    failures.append(f"{label}: {type(error).__name__}: {str(error)[:300]}")
                    continue
                shared = kernel.metadata.shared
                worst = max(worst, shared)
                if shared > SHARED_MEMORY_LIMIT:
                    failures.append(f"{label}: needs {shared} B of shared memory")
                ops = f"\n          {memory_ops(kernel.asm['ptx'])}" if args.memory_ops else ""
                print(f"{shared:>8} B  {label}{ops}", flush=True)
    print(f"largest {worst} B; {len(failures)} failures; {time.perf_counter() - start:.0f} s")
    for failure in failures:
        print("FAILED", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
