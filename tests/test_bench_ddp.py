"""scripts/bench_ddp.py's arithmetic and report, on synthetic epoch records (the runs themselves need GPUs; the
script's ``--smoke`` mode runs them on CPU, and test_ddp.py checks the EpochStats records under 2 processes)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.script_module import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_ddp")


def epochs(n: int, rate_per_gpu: float, psnrs: dict[int, float]) -> list[dict]:
    """4 epochs of 128 steps of 16 patches per rank; epoch 0 is 10x slower (warm-up). The last rank waits on its
    input for 10 % of every epoch, the others for 5 %."""
    out = []
    for e in range(4):
        patches = 128 * 16 * n
        train_s = patches / (rate_per_gpu * n) * (10 if e == 0 else 1)
        val = {"val/psnr": psnrs[e], "val/psnr_trilinear": 27.4, "val/ssim": 0.9} if e in psnrs else None
        out.append({"epoch": e, "global_step": 128 * (e + 1), "world_size": n, "train_s": train_s, "patches": patches,
                    "batches_rank0": 128, "elapsed_s": 10.0 * (e + 1), "train_s_per_rank": [train_s] * n,
                    "patches_per_rank": [patches // n] * n, "peak_mem_gb": [0.4] * n, "train_loss": 0.02, "val": val,
                    "input_wait_s_per_rank": [0.05 * train_s] * (n - 1) + [0.1 * train_s]})
    return out


def test_throughput_leaves_out_warmup_and_compares_to_one_gpu(bench):
    one = bench.summarize(epochs(1, 400.0, {1: 30.0, 3: 31.0}), 1, skip=1)
    assert one["timed_epochs"] == [1, 3] and not one["warmup_included"]
    assert one["patches_per_s"] == pytest.approx(400.0) and one["steps_per_s"] == pytest.approx(25.0)
    assert one["epoch0_train_s"] == pytest.approx(128 * 16 / 40.0)
    assert [v["epoch"] for v in one["val"]] == [1, 3] and one["final_val_psnr"] == 31.0
    assert one["final_val_psnr_trilinear"] == 27.4 and one["peak_mem_gb_per_gpu"] == 0.4
    assert one["input_wait_share"] == pytest.approx(0.1)  # the slowest-fed rank's share of the timed epochs
    four = bench.summarize(epochs(4, 350.0, {1: 30.5, 3: 31.5}), 4, skip=1)
    assert four["patches_per_s"] == pytest.approx(1400.0) and four["patches_per_s_per_gpu"] == pytest.approx(350.0)

    result = {"runs": {"1": {"devices": 1, "status": "ok", **one}, "4": {"devices": 4, "status": "ok", **four}},
              "input_pipeline": [{"loaders": 1, "patches_per_s_per_loader": 900.0, "patches_per_s_min": 900.0},
                                 {"loaders": 4, "patches_per_s_per_loader": 500.0, "patches_per_s_min": 420.0}]}
    bench.compare(result)
    bench.input_verdict(result)
    r4 = result["runs"]["4"]
    assert r4["speedup"] == pytest.approx(3.5) and r4["efficiency"] == pytest.approx(0.875)
    assert r4["input"]["loaders_measured"] == 4 and r4["input"]["input_over_consumption"] == pytest.approx(420 / 350)
    assert r4["input"]["verdict"] == "keeps up, small margin"
    assert result["runs"]["1"]["input"]["verdict"] == "keeps up"  # 900 vs 400 with one loader

    result.update({"environment": {"date": "2026-11-27T00:00:00", "device": "NVIDIA H100 80GB HBM3", "torch": "2.11",
                                   "triton": "3.6", "cudnn": 91900, "cuda": "13.0"},
                   "lightning": "2.6.6", "device_count": 4, "cpu_count": 64, "command": "scripts/bench_ddp.py",
                   "settings": {"base_overrides": ["experiment=x2_iso", "trainer=ddp"], "batch_size": 16,
                                "patch_size": [32, 32, 32], "scale": [2, 2, 2], "precision": "bf16-mixed",
                                "num_workers": 4, "scaling": "weak", "patches": 2048, "skip_epochs": 1}})
    md = bench.markdown(result)
    assert "| 4 | 1 | ok | 1400 | 350 | 21.9 | 3.50× | 88% | 10% |" in md  # N=4, round 1: patches/s, per GPU, steps/s
    old = result["runs"]["4"].pop("input_wait_share")  # records from before the input-wait column still render
    assert "| 4 | 1 | ok | 1400 | 350 | 21.9 | 3.50× | 88% | –% |" in bench.markdown(result) and old
    assert result["scaling"]["4"]["speedup_median"] == pytest.approx(3.5)
    assert "| 3 | 31.00 (40 s) | 31.50 (40 s) | 27.40 |" in md  # val trajectory, one column per N


def test_weak_scaling_overrides_and_reserved_keys(bench):
    args = bench.parse_args(["--devices", "1", "4", "--", "trainer.max_epochs=10"])
    o = bench.train_overrides(args, 4, Path("/tmp/run"))
    assert o[:2] == ["experiment=x2_iso", "trainer=ddp"] and o[-1] == "trainer.max_epochs=10"  # user's go last
    assert "trainer.devices=4" in o and "data.patches_per_epoch=8192" in o and "hydra.run.dir=/tmp/run" in o
    strong = bench.parse_args(["--scaling", "strong"])
    assert "data.patches_per_epoch=2048" in bench.train_overrides(strong, 4, Path("/tmp/run"))
    with pytest.raises(SystemExit):
        bench.parse_args(["--", "trainer.devices=2"])


def test_rounds_compare_within_a_round_and_take_the_median(bench):
    """A host that slows down between rounds must not enter the ratio: each N is compared with N=1 of its round."""
    runs = {}
    for rnd, slow in ((1, 1.0), (2, 0.7), (3, 1.0)):  # round 2 ran on a 30 % slower host
        for n, eff in ((1, 1.0), (4, {1: 0.90, 2: 0.85, 3: 0.95}[rnd])):
            runs[bench.run_key(n, rnd)] = {"devices": n, "round": rnd, "status": "ok",
                                           **bench.summarize(epochs(n, 400.0 * slow * eff, {1: 30.0}), n, skip=1)}
    result = {"runs": runs, "input_pipeline": []}
    bench.compare(result)
    assert set(runs) == {"1", "4", "1@2", "4@2", "1@3", "4@3"}
    assert runs["4@2"]["speedup"] == pytest.approx(4 * 0.85)  # against round 2's N=1, not round 1's
    four = result["scaling"]["4"]
    assert four["rounds"] == [1, 2, 3] and four["speedup_median"] == pytest.approx(4 * 0.90)
    assert four["efficiency_median"] == pytest.approx(0.90)


def test_warmup_run_is_short_untimed_and_recorded(bench, monkeypatch, tmp_path):
    """The cache warm-up run's own settings (2 short epochs) win over the user's, and it lands in the report, not in
    the timed runs."""
    seen = {}

    def fake_run(cmd, **kwargs):
        seen["cmd"] = cmd
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    args = bench.parse_args(["--devices", "1", "2", "--", "trainer.max_epochs=9"])
    assert args.warmup_run and not bench.parse_args(["--no-warmup-run"]).warmup_run
    result = {"runs": {}}
    bench.warm_caches(args, tmp_path, result, timeout=60.0)
    cmd = seen["cmd"]
    assert cmd[-2:] == ["trainer.max_epochs=2", f"data.patches_per_epoch={bench.WARMUP_PATCHES}"]
    assert "trainer.devices=1" in cmd and "trainer.max_epochs=9" in cmd  # the user's value, overridden after it
    assert result["runs"] == {} and result["warmup_run"]["returncode"] == 0
