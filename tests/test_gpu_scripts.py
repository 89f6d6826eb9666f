"""The GPU scripts (correctness check and benchmark) run end to end in ``--smoke`` mode under the Triton
interpreter and write reports with the keys the GPU runs are read by. Both run at once, in subprocesses."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = {"check": "scripts/check_kernel_gpu.py", "bench": "scripts/bench_conv_transpose3d.py"}
TIMEOUT_S = 240


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[subprocess.Popen, Path]]:
    """Start both scripts with ``--smoke`` in parallel; each test waits for its own."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO)}
    runs = {}
    for name, script in SCRIPTS.items():
        out = tmp_path_factory.mktemp(name) / f"{name}.json"
        extra = ["--workers", "1"]  # also exercises the worker-pool path
        proc = subprocess.Popen([sys.executable, script, "--smoke", "--out", str(out), *extra], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        runs[name] = (proc, out)
    yield runs
    for proc, _ in runs.values():
        if proc.poll() is None:
            proc.kill()


def _finish(run: tuple[subprocess.Popen, Path]) -> tuple[int, str, dict]:
    proc, out = run
    log, _ = proc.communicate(timeout=TIMEOUT_S)
    report = json.loads(out.read_text()) if out.exists() else {}
    return proc.returncode, log, report


def test_check_kernel_gpu_smoke(smoke_runs: dict) -> None:
    code, log, report = _finish(smoke_runs["check"])
    assert code == 0, f"check failed:\n{log[-3000:]}\nfailures: {report.get('failures')}"
    for key in ("device", "torch", "triton", "cudnn", "summary", "counts", "failures", "passed", "large",
                "coverage", "results"):
        assert key in report
    assert report["passed"] and report["failures"] == []
    assert {"fp32", "bf16", "fp16"} <= set(report["summary"])
    for s in report["summary"].values():
        assert s["runs"] > 0 and {"forward"} <= set(s["max_error"])
    assert report["counts"]["random"] > 0 and report["counts"]["decoder"] > 0 and report["counts"]["large"] == 2
    compiled = [r for r in report["results"] if "errors_compiled" in r]  # the decoder cases under torch.compile
    assert len(compiled) == 2 and all(r["ok"] and len(r["errors_compiled"]) == 3 for r in compiled)
    assert Path(smoke_runs["check"][1]).with_suffix(".md").read_text().startswith("# ConvTranspose3d")


def test_bench_conv_transpose3d_smoke(smoke_runs: dict) -> None:
    code, log, report = _finish(smoke_runs["bench"])
    assert code == 0, f"bench failed:\n{log[-3000:]}"
    for key in ("device", "torch", "triton", "cudnn", "date", "copy_bandwidth_gbs", "rows", "summary", "settings"):
        assert key in report
    assert {r["dtype"] for r in report["rows"]} == {"fp32", "bf16"}
    row = report["rows"][0]
    for key in ("times_ms", "best_ms", "ratio_cudnn_over_ours", "floor_ms", "pct_of_floor", "errors_fwd",
                "seed_ok", "ours_ok"):
        assert key in row
    assert set(row["times_ms"]["ours"]["fwd"]) == {"ncdhw", "channels_last"}
    assert row["ours_ok"], row["errors_fwd"]
    parts = row["ours_fwdbwd_own_times_us"]
    assert parts["layout"] in ("ncdhw", "channels_last") and parts["by_op"]
    assert all(us > 0 for us in parts["by_op"].values())
    assert report["summary"]["bf16"]["cudnn_over_ours_fwd"]["issue6_a_d"] is not None
    assert Path(smoke_runs["bench"][1]).with_suffix(".md").read_text().startswith("# ConvTranspose3d")


def test_bench_merge_fills_in_skipped_shapes(smoke_runs: dict, tmp_path: Path) -> None:
    """--merge joins a run and a second run of the shapes it skipped: every row once (the first run's where both
    measured one), the skips the second run filled in dropped, the summary recomputed, the runs listed; reports of
    different software are refused."""
    code, log, report = _finish(smoke_runs["bench"])
    assert code == 0, log[-3000:]
    fp32, bf16 = (next(r for r in report["rows"] if r["dtype"] == dt) for dt in ("fp32", "bf16"))
    name = fp32["name"]
    first = {**report, "rows": [fp32], "skipped_for_time_budget": [f"{name} bf16"]}
    second = {**report, "rows": [{**fp32, "times_ms": None}, bf16], "skipped_for_time_budget": []}
    paths = [tmp_path / "first.json", tmp_path / "second.json"]
    for path, part in zip(paths, (first, second)):
        path.write_text(json.dumps(part))
    out = tmp_path / "merged.json"
    args = [sys.executable, SCRIPTS["bench"], "--merge", *map(str, paths), "--out", str(out)]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    merged = json.loads(out.read_text())
    assert [(r["dtype"], r["times_ms"] is not None) for r in merged["rows"]] == [("fp32", True), ("bf16", True)]
    assert merged["skipped_for_time_budget"] == [] and merged["summary"] == report["summary"]
    assert [run["rows"] for run in merged["merged_from"]] == [[f"{name} fp32"], [f"{name} fp32", f"{name} bf16"]]
    assert "- run 2 (" in out.with_suffix(".md").read_text()
    paths[1].write_text(json.dumps({**second, "triton": "0.0"}))
    refused = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "different cards or software" in refused.stderr


def test_bench_model_interleaves_modes() -> None:
    """bench_model times the nets in turn within every repeat, reversing the order every other repeat, so that host
    or clock drift during the run reaches both nets alike; each net's median is over its own calls only."""
    sys.path.insert(0, str(REPO / "scripts"))
    import bench_model

    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("triton", "torch")}
    medians = bench_model._median_seconds(fns, torch.device("cpu"), repeats=4, warmup=1)
    assert calls == ["triton", "torch",  # warm-up, one each
                     "triton", "torch", "torch", "triton", "triton", "torch", "torch", "triton"]
    assert set(medians) == {"triton", "torch"} and all(s >= 0.0 for s in medians.values())


def test_bench_model_runs_the_composed_preset_in_channels_last(tmp_path: Path) -> None:
    """bench_model times the composed x2_iso preset (the channels _pretrained.yaml gives it), training steps only,
    with weights and inputs in channels_last_3d; the report names the format."""
    out = tmp_path / "model.json"
    args = [sys.executable, "scripts/bench_model.py", "--device", "cpu", "--batch", "1", "--lr-patch", "8",
            "--repeats", "1", "--volumes", "--memory-format", "channels_last_3d", "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # torch's op on the CPU: seconds
    subprocess.run(args, cwd=REPO, env=env, check=True, capture_output=True, text=True, timeout=TIMEOUT_S)
    report = json.loads(out.read_text())
    assert report["memory_format"] == "channels_last_3d" and report["inference"] == {}
    assert report["model"]["channels"] == [32, 64, 128] and report["model"]["num_res_units"] == 2
    (step,) = report["training_steps"]
    assert step["batch"] == 1 and step["triton_ms"] > 0 and step["torch_ms"] > 0
    assert "memory format channels_last_3d" in out.with_suffix(".md").read_text()
