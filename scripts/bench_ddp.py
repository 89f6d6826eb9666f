#!/usr/bin/env python
"""DDP training throughput and val-PSNR trajectory on 1, 2, 4 GPUs (same per-GPU batch), and the input pipeline's rate.

GPU (x2_iso, bf16-mixed, 8 epochs of 2048 patches per rank; ~5-6 min for 1+2+4 GPUs, capped by --budget 540 s):
    python scripts/bench_ddp.py --devices 1 2 4 --out benchmarks/ddp_bench.json
Host speed can drift between runs; ``--rounds 2`` runs 1 2 4 1 2 4 and takes each speed-up within its round (median
over rounds):
    python scripts/bench_ddp.py --devices 1 2 4 --rounds 2 --patches 3072 -- trainer.max_epochs=5
CPU smoke test (gloo, tiny model, 3 epochs; ~1 min on 2 cores):
    python scripts/bench_ddp.py --smoke --devices 1 2 --out /tmp/ddp_smoke/ddp_bench.json

Each device count N is one ``python -m app.train experiment=x2_iso trainer=ddp trainer.devices=N`` subprocess (what
a user runs; Lightning re-launches it per rank) with the ``app.callbacks.EpochStats`` callback, whose per-epoch JSON
lines (rank 0) give the numbers. Hydra overrides after ``--`` go last and win (e.g. ``trainer.max_epochs=20``).

Scaling (``--scaling weak``, the default): ``data.batch_size`` is per rank in Lightning DDP, and Lightning gives each
rank a ``DistributedSampler`` share of the epoch's items, so with ``data.patches_per_epoch`` fixed an N-GPU epoch
would be N times shorter and take N times fewer optimizer steps. Here ``data.patches_per_epoch`` =
``--patches`` x N instead: every rank trains ``--patches`` patches (the same number of steps) per epoch at every N,
so the per-epoch overheads are the same, the cosine schedule sees the same steps, and the PSNR trajectories compare
the same number of steps at an N times larger global batch (same learning rate). ``--scaling strong`` keeps
``data.patches_per_epoch`` = ``--patches`` for every N (what ``trainer.devices=N`` alone gives a user).

Throughput = patches trained by all ranks / wall time of the training batches (the slowest rank's; validation and
checkpointing excluded), over the epochs from ``--skip-epochs`` on (epoch 0 holds the Triton autotuning and
compilation). Input rate = patches/s of ``data.train_dataloader()`` alone (no model, the configured num_workers), in
1 and in max(N) concurrent processes, each one rank's loader, after a warm-up; compared with each rank's
consumption in training. Writes --out (JSON, rewritten as results come), a .md table and a .png plot beside it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
from app.train import compose_train_config  # noqa: E402
from bench_env import environment  # noqa: E402

TAG = "[bench_ddp]"
# batch 16 and no coarser patches: the recorded runs' setting (the x2_iso preset's before its retraining at batch 64)
GPU_DEFAULTS = ["experiment=x2_iso", "trainer=ddp", "trainer.max_epochs=8", "trainer.check_val_every_n_epoch=2",
                "trainer.num_sanity_val_steps=0", "test=false", "data.batch_size=16", "data.coarsen.prob=0.0"]
SMOKE = ["trainer.precision=32-true", "model.channels=[4,8]", "model.strides=[2]",
         "data.patch_size=[16,16,16]", "data.batch_size=2", "data.samples_per_volume=2", "data.val_patches=2",
         "data.num_workers=1", "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=1",
         "trainer.log_every_n_steps=1"]
BENCH = ["~callbacks.progress_bar", "trainer.enable_progress_bar=false",  # no per-step bar (and its host syncs)
         "+callbacks.epoch_stats._target_=app.callbacks.EpochStats"]
WARMUP_PATCHES = 256  # patches per epoch of the cache warm-up run (16 steps at batch 16)
RESERVED = ("trainer.devices=", "data.patches_per_epoch=", "hydra.run.dir=")


def log(msg: str) -> None:
    print(f"{TAG} {msg}", flush=True)


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def train_overrides(args: argparse.Namespace, n: int, run_dir: Path) -> list[str]:
    patches = args.patches * n if args.scaling == "weak" else args.patches
    base = [*GPU_DEFAULTS, *(SMOKE if args.smoke else []), f"trainer.accelerator={args.accelerator}"]
    if args.strategy != "ddp":
        base.append(f"trainer.strategy={args.strategy}")
    return [*base, *BENCH, f"trainer.devices={n}", f"data.patches_per_epoch={patches}", f"hydra.run.dir={run_dir}",
            *args.overrides]


def train_command(args: argparse.Namespace, n: int, run_dir: Path, *extra: str) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) of one ``python -m app.train`` run on ``n`` devices in ``run_dir``; ``extra`` overrides
    come last."""
    return ([sys.executable, "-m", "app.train", *train_overrides(args, n, run_dir), *extra],
            {**os.environ, "PYTHONUNBUFFERED": "1"})


# --------------------------------------------------------------------------------------------------- training runs
def summarize(epochs: list[dict], n: int, skip: int) -> dict[str, Any]:
    """Throughput over the epochs >= skip (all of them, flagged, if there are no others), and the val trajectory."""
    timed = [e for e in epochs if e["epoch"] >= skip]
    warmup_included = not timed
    timed = timed or epochs
    out: dict[str, Any] = {"epochs_done": len(epochs)}
    if timed:
        seconds = sum(e["train_s"] for e in timed)
        patches = sum(e["patches"] for e in timed)
        steps = sum(e["batches_rank0"] for e in timed)
        out.update({
            "timed_epochs": [timed[0]["epoch"], timed[-1]["epoch"]], "warmup_included": warmup_included,
            "timed_train_s": seconds, "timed_patches": patches,
            "patches_per_s": patches / seconds, "patches_per_s_per_gpu": patches / seconds / n,
            "steps_per_s": steps / seconds, "epoch0_train_s": epochs[0]["train_s"] if epochs[0]["epoch"] == 0 else None,
            "patches_per_epoch": epochs[-1]["patches"],
        })
        waits = [e["input_wait_s_per_rank"] for e in timed if e.get("input_wait_s_per_rank")]
        if len(waits) == len(timed):  # the slowest-fed rank's share of the training time waiting for input
            out["input_wait_share"] = max(sum(w[r] for w in waits) for r in range(len(waits[0]))) / seconds
    mems = [m for e in epochs for m in (e.get("peak_mem_gb") or [])]
    out["peak_mem_gb_per_gpu"] = max(mems) if mems else None
    val = [{"epoch": e["epoch"], "elapsed_s": round(e["elapsed_s"], 2),
            **{k.split("/", 1)[1]: v for k, v in e["val"].items()}} for e in epochs if e.get("val")]
    out["val"] = val
    out["final_val_psnr"] = val[-1].get("psnr") if val else None
    out["final_val_psnr_trilinear"] = val[-1].get("psnr_trilinear") if val else None
    return out


def epoch_line(tag: str, e: dict, max_epochs: Any) -> str:
    rate = e["patches"] / e["train_s"] if e["train_s"] > 0 else float("nan")
    text = (f"{tag} epoch {e['epoch']}/{max_epochs}: train {e['train_s']:.2f} s, {e['patches']} patches "
            f"({rate:.0f}/s), loss {e['train_loss'] if e['train_loss'] is not None else float('nan'):.4f}")
    if e.get("val"):
        text += (f", val PSNR {e['val'].get('val/psnr', float('nan')):.2f} dB "
                 f"(trilinear {e['val'].get('val/psnr_trilinear', float('nan')):.2f})")
    return text + f", t+{e['elapsed_s']:.0f} s"


def run_key(n: int, rnd: int) -> str:
    """Key of a run in result["runs"]: "4" for round 1, "4@2" for N=4 in round 2."""
    return str(n) if rnd == 1 else f"{n}@{rnd}"


def run_training(args: argparse.Namespace, n: int, rnd: int, work: Path, result: dict, save, timeout: float) -> None:
    name = f"n{n}" if rnd == 1 else f"n{n}_r{rnd}"
    tag = f"N={n}" + (f" round {rnd}" if rnd > 1 else "")
    run_dir = work / name
    stats = run_dir / "epoch_stats.jsonl"
    log_file = work / f"{name}.log"
    stats.unlink(missing_ok=True)  # a reused --work-dir: no stale epochs
    cmd, env = train_command(args, n, run_dir)
    entry = result["runs"][run_key(n, rnd)] = {"devices": n, "round": rnd, "status": "running", "command": cmd[1:],
                                               "run_dir": str(run_dir), "log": str(log_file), "epochs": []}
    save()
    log(f"{tag}: start -> {log_file}")
    log(f"{tag}: python -m app.train {' '.join(cmd[3:])}")
    start = time.monotonic()
    with log_file.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    max_epochs = next((o.split("=", 1)[1] for o in reversed(cmd) if o.startswith("trainer.max_epochs=")), "?")
    seen = 0
    status = None

    def read_new() -> None:
        nonlocal seen
        if not stats.is_file():
            return
        lines = [ln for ln in stats.read_text().splitlines() if ln.strip()]
        for line in lines[seen:]:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line being written: read it next time
                break
            entry["epochs"].append(record)
            seen += 1
            log(epoch_line(tag, record, int(max_epochs) - 1 if max_epochs.isdigit() else "?"))
            entry.update(summarize(entry["epochs"], n, args.skip_epochs))
            save()

    while proc.poll() is None:
        read_new()
        if time.monotonic() - start > timeout:
            status = f"stopped after {timeout:.0f} s (--run-timeout/--budget)"
            log(f"{tag}: {status}; stopping it (partial results kept)")
            for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)  # the run's own process group: its ranks and loader workers
                    proc.wait(timeout=wait)
                    break
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    continue
            break
        time.sleep(1.0)
    read_new()
    entry["wall_s"] = time.monotonic() - start
    entry["returncode"] = proc.returncode
    entry["status"] = status or ("ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})")
    entry.update(summarize(entry["epochs"], n, args.skip_epochs))
    save()
    if entry["status"] != "ok":
        tail = log_file.read_text(errors="replace").splitlines()[-25:]
        log(f"{tag}: {entry['status']}; last lines of {log_file}:\n    " + "\n    ".join(tail))
    if "patches_per_s" in entry:
        log(f"{tag}: {entry['status']} in {entry['wall_s']:.0f} s: {entry['patches_per_s']:.0f} patches/s "
            f"({entry['patches_per_s_per_gpu']:.0f} per GPU, epochs {entry['timed_epochs'][0]}-"
            f"{entry['timed_epochs'][1]}), final val PSNR {entry['final_val_psnr'] or float('nan'):.2f} dB")


def warm_caches(args: argparse.Namespace, work: Path, result: dict, timeout: float) -> None:
    """One short N=1 run before the timed ones, not counted: it fills Triton's on-disk compile cache, which a fresh
    machine lacks (the first run's epoch 0 took 42 s there against ~10 s once cached), so no timed run pays for it."""
    log_file = work / "warmup.log"
    cmd, env = train_command(args, 1, work / "warmup", "trainer.max_epochs=2",
                             f"data.patches_per_epoch={WARMUP_PATCHES}")
    log(f"warm-up run (not timed): N=1, 2 epochs of {WARMUP_PATCHES} patches -> {log_file}")
    start = time.monotonic()
    with log_file.open("w") as out:
        try:
            code = subprocess.run(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = None
    result["warmup_run"] = {"wall_s": round(time.monotonic() - start, 1), "returncode": code, "log": str(log_file)}
    log(f"warm-up run: exit {code} after {result['warmup_run']['wall_s']:.0f} s")


def compare(result: dict) -> None:
    """Speed-up and efficiency against the smallest device count that ran in the same round (normally N=1), and
    per device count the median over rounds (``result["scaling"]``): runs next to each other in time are compared,
    so a host that gets slower or faster between rounds does not enter the ratio."""
    timed = [r for r in result["runs"].values() if r.get("patches_per_s")]
    for rnd in sorted({r.get("round", 1) for r in timed}):
        runs = [r for r in timed if r.get("round", 1) == rnd]
        ref = min(runs, key=lambda r: r["devices"])
        for r in runs:
            r["speedup"] = r["patches_per_s"] / ref["patches_per_s"]
            r["efficiency"] = r["speedup"] / (r["devices"] / ref["devices"])
            r["speedup_reference_devices"] = ref["devices"]
    result["scaling"] = {}
    for n in sorted({r["devices"] for r in timed}):
        runs = [r for r in timed if r["devices"] == n]
        result["scaling"][str(n)] = {
            "rounds": [r.get("round", 1) for r in runs], "speedups": [r["speedup"] for r in runs],
            "patches_per_s": [r["patches_per_s"] for r in runs],
            "speedup_median": statistics.median(r["speedup"] for r in runs),
            "efficiency_median": statistics.median(r["efficiency"] for r in runs)}


# --------------------------------------------------------------------------------------------------- input pipeline
def _input_worker(overrides: list[str], batches: int, warmup: int, barrier: Any, queue: Any, index: int) -> None:
    """One rank's train loader, no model: patches/s over ``batches`` batches after ``warmup`` (worker start-up)."""
    try:
        from hydra.utils import instantiate

        cfg = compose_train_config(overrides, output_dir=os.devnull)
        dm = instantiate(cfg.data, _convert_="all")
        dm.setup("fit")
        loader = dm.train_dataloader()
        barrier.wait(timeout=600)  # the concurrent loaders start together
        seen = patches = 0
        t0 = time.perf_counter()
        while seen < warmup + batches:
            for batch in loader:  # a new epoch reuses the persistent workers, as training does
                seen += 1
                if seen == warmup:
                    t0 = time.perf_counter()
                elif seen > warmup:
                    patches += int(batch["hr"].shape[0])
                if seen >= warmup + batches:
                    break
        seconds = time.perf_counter() - t0
        queue.put((index, {"patches": patches, "batches": batches, "seconds": seconds,
                           "patches_per_s": patches / seconds, "num_workers": int(cfg.data.num_workers),
                           "batch_size": int(cfg.data.batch_size)}))
    except Exception as exc:  # reported in the JSON, the benchmark goes on
        barrier.abort()  # the other loaders stop waiting for this one
        queue.put((index, {"error": f"{type(exc).__name__}: {str(exc)[-3000:]}"}))


def measure_input(overrides: list[str], loaders: int, batches: int, warmup: int, timeout: float) -> dict:
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(loaders), ctx.Queue()
    procs = [ctx.Process(target=_input_worker, args=(overrides, batches, max(1, warmup), barrier, queue, i))
             for i in range(loaders)]
    for p in procs:
        p.start()
    got: dict[int, dict] = {}
    deadline = time.monotonic() + timeout
    while len(got) < loaders and time.monotonic() < deadline:
        try:
            i, res = queue.get(timeout=1.0)
            got[i] = res
        except Exception:  # queue.Empty
            if not any(p.is_alive() for p in procs) and queue.empty():
                break
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.terminate()
            p.join(timeout=5)
    per = [got[i] for i in sorted(got)]
    errors = [r["error"] for r in per if "error" in r]
    ok = [r for r in per if "error" not in r]
    out: dict[str, Any] = {"loaders": loaders, "per_loader": per}
    if errors or len(ok) < loaders:
        out["error"] = "; ".join(errors) or f"{loaders - len(ok)} loader(s) gave no result within {timeout:.0f} s"
    if ok:
        rates = [r["patches_per_s"] for r in ok]
        out.update({"patches_per_s_per_loader": sum(rates) / len(rates), "patches_per_s_min": min(rates),
                    "patches_per_s_total": sum(rates), "num_workers": ok[0]["num_workers"],
                    "batch_size": ok[0]["batch_size"], "batches": batches, "warmup_batches": max(1, warmup)})
    return out


def input_verdict(result: dict) -> None:
    """Per training run: each rank's consumption vs one loader's rate measured with as many loaders running."""
    inputs = {m["loaders"]: m for m in result.get("input_pipeline", []) if m.get("patches_per_s_per_loader")}
    if not inputs:
        return
    for r in result["runs"].values():
        if not r.get("patches_per_s_per_gpu"):
            continue
        k = max((k for k in inputs if k <= r["devices"]), default=min(inputs))
        supply = inputs[k]["patches_per_s_min"]
        ratio = supply / r["patches_per_s_per_gpu"]
        r["input"] = {"loaders_measured": k, "input_patches_per_s_per_rank": supply, "input_over_consumption": ratio,
                      "verdict": ("keeps up" if ratio >= 1.5 else "keeps up, small margin" if ratio >= 1.1
                                  else "likely the bottleneck")}


# --------------------------------------------------------------------------------------------------- report
def fmt(v: Any, spec: str = ".2f", na: str = "–") -> str:
    return na if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def label(r: dict) -> str:
    return f"N={r['devices']}" + (f" r{r['round']}" if r.get("round", 1) > 1 else "")


def markdown(result: dict) -> str:
    env, s = result["environment"], result["settings"]
    runs = sorted(result["runs"].values(), key=lambda r: (r.get("round", 1), r["devices"]))
    first = [r for r in runs if r.get("round", 1) == 1]
    rounds = max((r.get("round", 1) for r in runs), default=1)
    lines = [
        "# DDP training: throughput and val PSNR on 1, 2, 4 GPUs", "",
        f"{env['date'][:10]} · {env['device']} × {result['device_count']} · torch {env['torch']} · "
        f"Triton {env['triton']} · Lightning {result['lightning']} · cuDNN {env['cudnn']} · CUDA {env['cuda']} · "
        f"{result['cpu_count']} CPU cores", "",
        f"`python -m app.train {' '.join(s['base_overrides'])}` with `trainer.devices=N`; per-GPU batch "
        f"{s['batch_size']} (HR patch {s['patch_size']}, scale {s['scale']}), precision {s['precision']}, "
        f"{s['num_workers']} loader worker(s) per rank. Scaling **{s['scaling']}**: "
        + (f"every rank trains {s['patches']} patches per epoch (`data.patches_per_epoch` = {s['patches']} × N), "
           "so every N takes the same steps per epoch with an N× larger global batch (same learning rate)."
           if s["scaling"] == "weak" else
           f"`data.patches_per_epoch` = {s['patches']} for every N, split over the ranks (N× fewer steps per epoch).")
        + f" Throughput: patches of all ranks / wall time of the training batches (slowest rank; validation and "
        f"checkpointing excluded), epochs ≥ {s['skip_epochs']} (epoch 0 holds Triton autotuning/compilation)."
        " Input wait: the share of that time the slowest-fed rank spent between training batches (fetching the next"
        " batch; host time, no CUDA sync)."
        + (f" An untimed N=1 run ({result['warmup_run']['wall_s']:.0f} s, exit {result['warmup_run']['returncode']}) "
           "filled Triton's compile cache first." if result.get("warmup_run") else ""), "",
    ]
    scaling = result.get("scaling", {})
    if rounds > 1 and scaling:
        lines += [f"Runs in {rounds} rounds (each round runs every N in turn); speed-up against N=1 of the same round, "
                  "median over rounds:", "", "| GPUs | speed-up (median) | efficiency | speed-up per round |",
                  "|---|---|---|---|"]
        for n, sc in scaling.items():
            lines.append(f"| {n} | {sc['speedup_median']:.2f}× | {100 * sc['efficiency_median']:.0f}% | "
                         + ", ".join(f"{v:.2f}×" for v in sc["speedups"]) + " |")
        lines.append("")
    lines += [
        "| GPUs | round | status | patches/s | per GPU | steps/s | speed-up | efficiency | input wait | epoch 0 (s) | "
        "peak mem/GPU | final val PSNR (trilinear) | run wall (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        mem = f"{r['peak_mem_gb_per_gpu']:.2f} GB" if r.get("peak_mem_gb_per_gpu") is not None else "n/a"
        lines.append(
            f"| {r['devices']} | {r.get('round', 1)} | {r['status']} | {fmt(r.get('patches_per_s'), '.0f')} | "
            f"{fmt(r.get('patches_per_s_per_gpu'), '.0f')} | {fmt(r.get('steps_per_s'), '.1f')} | "
            f"{fmt(r.get('speedup'), '.2f')}× | {fmt(100 * r['efficiency'] if r.get('efficiency') else None, '.0f')}% "
            f"| {fmt(100 * r['input_wait_share'] if 'input_wait_share' in r else None, '.0f')}% "
            f"| {fmt(r.get('epoch0_train_s'), '.1f')} | {mem} | {fmt(r.get('final_val_psnr'))} "
            f"({fmt(r.get('final_val_psnr_trilinear'))}) | {fmt(r.get('wall_s'), '.0f')} |")
    epochs = sorted({v["epoch"] for r in runs for v in r.get("val", [])})
    if epochs:
        lines += ["", "Val PSNR (dB) by epoch; in brackets, seconds since training started (validation included):", "",
                  "| epoch | " + " | ".join(label(r) for r in runs) + " | trilinear |",
                  "|---|" + "---|" * (len(runs) + 1)]
        for ep in epochs:
            cells, tri = [], None
            for r in runs:
                v = next((v for v in r.get("val", []) if v["epoch"] == ep), None)
                cells.append(f"{fmt(v.get('psnr'))} ({v['elapsed_s']:.0f} s)" if v else "–")
                tri = tri if tri is not None else (v or {}).get("psnr_trilinear")
            lines.append(f"| {ep} | " + " | ".join(cells) + f" | {fmt(tri)} |")
    inputs = result.get("input_pipeline", [])
    if inputs:
        lines += ["", "Input pipeline alone (`train_dataloader()` of one rank, no model, "
                  f"{s['num_workers']} worker(s) each, batch {s['batch_size']}):", "",
                  "| loaders at once | patches/s per loader (min) | total | note |", "|---|---|---|---|"]
        for m in inputs:
            lines.append(f"| {m['loaders']} | {fmt(m.get('patches_per_s_per_loader'), '.0f')} "
                         f"({fmt(m.get('patches_per_s_min'), '.0f')}) | {fmt(m.get('patches_per_s_total'), '.0f')} | "
                         f"{m.get('error', '').splitlines()[0] if m.get('error') else ''} |")
        judged = [r for r in first if r.get("input")]
        if judged:
            lines += ["", "| GPUs | consumed per GPU (patches/s) | input per rank | input / consumption "
                      "| data loading |", "|---|---|---|---|---|"]
            for r in judged:
                i = r["input"]
                lines.append(f"| {r['devices']} | {r['patches_per_s_per_gpu']:.0f} | "
                             f"{i['input_patches_per_s_per_rank']:.0f} ({i['loaders_measured']} loader(s) at once) | "
                             f"{i['input_over_consumption']:.2f} | {i['verdict']} |")
    if result.get("plot"):
        lines += ["", f"![val PSNR and throughput]({Path(result['plot']).name})"]
    if result.get("gpu_topology"):
        lines += ["", "GPU interconnect (`nvidia-smi topo -m`):", "", "```", result["gpu_topology"].rstrip(), "```"]
    lines += ["", f"Command: `{result['command']}`"]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> bool:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        log("matplotlib is not installed: no plot")
        return False
    runs = sorted((r for r in result["runs"].values() if r.get("epochs")), key=lambda r: (r.get("round", 1), r["devices"]))
    if not runs:
        return False
    fig = Figure(figsize=(13, 3.8))
    ax_e, ax_t, ax_b = fig.subplots(1, 3)
    tri = None
    for r in runs:
        val = [v for v in r.get("val", []) if v.get("psnr") is not None]
        if val:
            ax_e.plot([v["epoch"] for v in val], [v["psnr"] for v in val], "o-", label=label(r))
            ax_t.plot([v["elapsed_s"] for v in val], [v["psnr"] for v in val], "o-", label=label(r))
            tri = tri if tri is not None else val[-1].get("psnr_trilinear")
    for ax, xlabel in ((ax_e, "epoch"), (ax_t, "seconds since training start")):
        if tri is not None:
            ax.axhline(tri, color="grey", ls="--", label="trilinear")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("val PSNR (dB)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    scaling = result.get("scaling", {})
    if scaling:
        ns = [int(n) for n in scaling]
        xs = [str(n) for n in ns]
        medians = [scaling[x]["speedup_median"] for x in xs]
        ax_b.bar(xs, medians, color="tab:blue", label="speed-up (median over rounds)")
        for x in xs:
            per = scaling[x]["speedups"]
            ax_b.plot([x] * len(per), per, "k.", ms=5)
        ax_b.plot(xs, [n / ns[0] for n in ns], "k--o", ms=4, mfc="none", label="linear")
        for x, m in zip(xs, medians):
            ax_b.annotate(f"{m:.2f}×", (x, m), ha="center", va="bottom", fontsize=8)
        ax_b.set_xlabel("GPUs")
        ax_b.set_ylabel(f"training throughput / N={ns[0]} (dots: rounds)")
        ax_b.legend(fontsize=8)
    scale = "x".join(str(v) for v in result["settings"]["scale"])
    fig.suptitle(f"DDP training, scale {scale}, {result['settings']['scaling']} scaling — "
                 f"{result['environment']['device']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return True


def gpu_topology() -> str | None:
    """``nvidia-smi topo -m`` (NVLink or PCIe between the GPUs: what the all-reduce crosses), or None."""
    try:
        return subprocess.run(["nvidia-smi", "topo", "-m"], capture_output=True, text=True, timeout=30).stdout or None
    except (OSError, subprocess.SubprocessError):
        return None


# --------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4], help="device counts, one run each")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "ddp_bench.json")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="run folders and logs (default outputs/bench_ddp/<UTC time>)")
    p.add_argument("--accelerator", default=None, help="gpu (default) or cpu (--smoke's default)")
    p.add_argument("--strategy", default="ddp", choices=["ddp", "ddp_spawn"],
                   help="ddp: Lightning re-launches the command per rank (the README's path); ddp_spawn: CPU CI's")
    p.add_argument("--rounds", type=int, default=1,
                   help="run the --devices sequence this many times in turn (1 2 4 1 2 4 ...); speed-ups are taken "
                        "within a round and reported as the median over rounds")
    p.add_argument("--scaling", default="weak", choices=["weak", "strong"],
                   help="weak: data.patches_per_epoch = --patches x N (same steps per epoch); strong: = --patches")
    p.add_argument("--patches", type=int, default=None,
                   help="patches per rank per epoch (weak) or per epoch (strong); default 2048 (GPU: 128 steps of "
                        "16, ~5 s), 8 with --smoke")
    p.add_argument("--skip-epochs", type=int, default=1, help="first epochs left out of the throughput (warm-up)")
    p.add_argument("--input-batches", type=int, default=None, help="timed loader batches (default 100; smoke 10)")
    p.add_argument("--input-warmup", type=int, default=None, help="loader batches before timing (default 10; smoke 2)")
    p.add_argument("--input-loaders", type=int, nargs="*", default=None,
                   help="concurrent loader processes to measure (default: 1 and max(--devices)); none to skip")
    p.add_argument("--run-timeout", type=float, default=None, help="seconds per training run (GPU 300, smoke 600)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for the whole benchmark (GPU default 540, under a 10-min command limit; smoke: none): "
                        "the runs still to come share what is left equally (at least 60 s each); a run past its share "
                        "is stopped (its epochs so far are kept); one with < 75 s left is skipped")
    p.add_argument("--no-warmup-run", dest="warmup_run", action="store_false",
                   help="skip the untimed N=1 run that fills Triton's compile cache first (always skipped with --smoke)")
    p.add_argument("--smoke", action="store_true", help="CPU, gloo, tiny model and epochs: checks the pipeline")
    p.add_argument("--from-json", action="store_true", help="only rewrite the .md/.png from an existing --out")
    p.add_argument("overrides", nargs="*", help="Hydra overrides after --, applied last to every run")
    args = p.parse_args(argv)
    args.accelerator = args.accelerator or ("cpu" if args.smoke else "gpu")
    args.patches = args.patches or (8 if args.smoke else 2048)
    args.input_batches = args.input_batches or (10 if args.smoke else 100)
    args.input_warmup = args.input_warmup if args.input_warmup is not None else (2 if args.smoke else 10)
    args.run_timeout = args.run_timeout or (600.0 if args.smoke else 300.0)
    args.budget = args.budget if args.budget is not None else (0.0 if args.smoke else 540.0)
    if args.input_loaders is None:
        args.input_loaders = sorted({1, max(args.devices)})
    bad = [o for o in args.overrides if o.lstrip("+~").startswith(RESERVED)]
    if bad:
        p.error(f"{bad}: set by the benchmark (device counts: --devices, epoch length: --patches/--scaling, "
                "folders: --work-dir)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out.resolve()
    md_path, png_path = out.with_suffix(".md"), out.with_suffix(".png")
    if args.from_json:
        result = json.loads(out.read_text())
        result["plot"] = str(png_path) if plot(result, png_path) else None
        md_path.write_text(markdown(result))
        print(md_path.read_text())
        return 0
    started = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d_%H-%M-%S")
    work = (args.work_dir or REPO / "outputs" / "bench_ddp" / stamp).resolve()
    work.mkdir(parents=True, exist_ok=True)

    on_gpu = args.accelerator in ("gpu", "cuda")
    count = torch.cuda.device_count() if on_gpu else os.cpu_count()
    if on_gpu and not torch.cuda.is_available():
        log("no CUDA device here: use --smoke (or --accelerator cpu) on a CPU machine")
        return 2
    import lightning

    cfg = compose_train_config(train_overrides(args, 1, work / "compose"), output_dir=os.devnull)
    result: dict[str, Any] = {
        "script": "scripts/bench_ddp.py", "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "environment": environment(torch.device("cuda" if on_gpu else "cpu")), "lightning": lightning.__version__,
        "device_count": count, "cpu_count": os.cpu_count(), "gpu_topology": gpu_topology() if on_gpu else None,
        "settings": {
            "devices": args.devices, "rounds": args.rounds, "accelerator": args.accelerator, "strategy": args.strategy,
            "scaling": args.scaling, "patches": args.patches, "skip_epochs": args.skip_epochs,
            "batch_size": int(cfg.data.batch_size), "patch_size": list(cfg.data.patch_size),
            "scale": list(cfg.data.scale), "num_workers": int(cfg.data.num_workers),
            "precision": str(cfg.trainer.precision), "max_epochs": int(cfg.trainer.max_epochs),
            "check_val_every_n_epoch": int(cfg.trainer.check_val_every_n_epoch),
            "base_overrides": [*GPU_DEFAULTS, *(SMOKE if args.smoke else []), *args.overrides],
            "user_overrides": args.overrides, "work_dir": str(work),
        },
        "runs": {}, "input_pipeline": [],
    }

    def save() -> None:
        compare(result)
        input_verdict(result)
        write_json(out, result)
        md_path.write_text(markdown(result))

    save()
    log(f"{result['environment']['device']} x {count}; devices {args.devices}; {args.scaling} scaling, "
        f"{args.patches} patches per {'rank' if args.scaling == 'weak' else 'epoch'} per epoch, per-GPU batch "
        f"{result['settings']['batch_size']}; results -> {out}")

    for k in args.input_loaders:
        log(f"input pipeline: {k} loader(s) at once, {result['settings']['num_workers']} workers each, "
            f"{args.input_warmup} + {args.input_batches} batches")
        m = measure_input(train_overrides(args, 1, work / "compose"), k, args.input_batches, args.input_warmup,
                          timeout=90.0 if not args.smoke else 600.0)
        result["input_pipeline"].append(m)
        save()
        log(f"input pipeline: {k} loader(s): " + (f"{m['patches_per_s_per_loader']:.0f} patches/s per loader "
                                                  f"(min {m['patches_per_s_min']:.0f})" if "patches_per_s_min" in m
                                                  else "") + (f" ERROR {m['error']}" if m.get("error") else ""))

    if args.warmup_run and not args.smoke:
        warm_caches(args, work, result, timeout=min(args.run_timeout, 120.0))
        save()

    runnable = [n for n in args.devices if not (on_gpu and n > count)]
    plan = [(rnd, n) for rnd in range(1, args.rounds + 1) for n in args.devices]  # rounds in turn: 1 2 4 1 2 4
    to_run = [(rnd, n) for rnd, n in plan if n in runnable]
    for rnd, n in plan:
        left = args.budget - (time.monotonic() - started) if args.budget else float("inf")
        share = (left - 15) / (len(to_run) - to_run.index((rnd, n))) if n in runnable else 0.0  # runs left split it
        skip = (f"skipped: {count} GPU(s) here" if n not in runnable else
                f"skipped: {left:.0f} s of the {args.budget:.0f} s budget left" if left - 15 < 60 else None)
        if skip:
            result["runs"][run_key(n, rnd)] = {"devices": n, "round": rnd, "status": skip, "epochs": []}
            log(f"N={n} round {rnd}: {skip}")
            save()
            continue
        timeout = min(args.run_timeout, max(share, 60.0))
        if timeout < args.run_timeout:
            log(f"N={n} round {rnd}: {timeout:.0f} s allowed (its share of the {args.budget:.0f} s budget)")
        run_training(args, n, rnd, work, result, save, timeout=timeout)
        result["plot"] = str(png_path) if plot(result, png_path) else None
        save()

    print(md_path.read_text(), flush=True)
    log(f"wrote {out}, {md_path}" + (f", {png_path}" if result.get("plot") else ""))
    return 0 if all(r["status"] == "ok" or r["status"].startswith("skipped") for r in result["runs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
