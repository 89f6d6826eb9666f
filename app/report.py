"""Evaluation outputs: per-case CSV, JSON summary (mean, std, 95% CI, paired gains), plots, one HTML page.

Files written under ``out_dir``: ``metrics.csv``, ``summary.json``, ``plots/boxplot.png``,
``plots/montage_<case>.png`` (by ``montage``, during evaluation) and ``report.html``, which uses only
relative links to those files and inline CSS (no network). Non-finite numbers (PSNR of identical
volumes) are written to JSON as the strings "inf"/"-inf"; undefined ones (a CI from one case) as null.
"""

from __future__ import annotations

import csv
import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

CSV_COLUMNS = ("case", "method", "kind", "scale", "psnr", "ssim", "psnr_fg", "ssim_fg", "data_range",
               "foreground_fraction", "seconds")
METRICS = ("psnr", "ssim", "psnr_fg", "ssim_fg")
_LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "psnr_fg": "PSNR fg (dB)", "ssim_fg": "SSIM fg"}
_VIEWS = {"axial": 2, "coronal": 1, "sagittal": 0}  # RAS axis held fixed by each view


def describe(values: Sequence[float]) -> dict[str, Any]:
    """n, mean, std (ddof 1) and the Student-t 95% CI of the mean; CI None for n < 2 or non-finite values."""
    v = np.asarray(values, dtype=np.float64)
    n = int(v.size)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci95": None}
    with np.errstate(invalid="ignore"):
        mean = float(v.mean())
        std = float(v.std(ddof=1)) if n > 1 else 0.0
    ci = None
    if n > 1 and np.isfinite(v).all():
        half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
        ci = [mean - half, mean + half]
    return {"n": n, "mean": mean, "std": std, "ci95": ci}


def summarize(rows: list[dict[str, Any]], models: Sequence[str], baselines: Sequence[str]) -> dict[str, Any]:
    """Per-method statistics, the best baseline (highest mean PSNR) and each model's paired gains."""
    by_method = {m: [r for r in rows if r["method"] == m] for m in [*models, *baselines]}
    methods = {m: {k: describe([r[k] for r in rs]) for k in (*METRICS, "seconds")} for m, rs in by_method.items()}
    best = max(baselines, key=lambda b: methods[b]["psnr"]["mean"])
    gains: dict[str, dict[str, Any]] = {}
    for model in models:
        gains[model] = {}
        for base in baselines:
            ref = {r["case"]: r for r in by_method[base]}
            pairs = [(r, ref[r["case"]]) for r in by_method[model] if r["case"] in ref]
            with np.errstate(invalid="ignore"):
                gains[model][base] = {k: describe([a[k] - b[k] for a, b in pairs]) for k in METRICS}
    return {"methods": methods, "best_baseline": best, "gains": gains}


def gain_line(gain: dict[str, Any]) -> str:
    """One line for a model's gain over a baseline: PSNR dB with its 95% CI and SSIM."""
    psnr, ssim = gain["psnr"], gain["ssim"]
    ci = f" (95% CI {psnr['ci95'][0]:+.2f} to {psnr['ci95'][1]:+.2f})" if psnr["ci95"] else ""
    return f"PSNR {psnr['mean']:+.2f} dB{ci}, SSIM {ssim['mean']:+.4f} over {psnr['n']} case(s)"


def _jsonable(value: Any) -> Any:
    """Recursively replace inf by "inf"/"-inf" and NaN by None (strict JSON)."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """One row per (case, method) with the columns of ``CSV_COLUMNS``."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def box_plot(path: Path, rows: list[dict[str, Any]], methods: Sequence[str]) -> Path:
    """Box plot per method of PSNR and SSIM (whole volume); infinite values are left out."""
    fig = Figure(figsize=(max(6.0, 1.6 * len(methods)), 3.6))
    for ax, key in zip(fig.subplots(1, 2), ("psnr", "ssim")):
        data = [[r[key] for r in rows if r["method"] == m and math.isfinite(r[key])] for m in methods]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(methods) + 1), methods, rotation=30, ha="right")
        ax.set_title(_LABELS[key])
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _in_plane(view: str) -> tuple[int, int]:
    """The two RAS axes shown by ``view`` (horizontal, vertical)."""
    return tuple(a for a in range(3) if a != _VIEWS[view])  # type: ignore[return-value]


def _slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """2D slice of a RAS volume with the fixed ``axis``, transposed for imshow(origin="lower")."""
    return np.take(volume, index, axis=axis).T


def montage(path: Path, panels: dict[str, np.ndarray], hr: np.ndarray, scale: Sequence[int],
            spacing: Sequence[float]) -> Path:
    """Slice montage: columns = panels (first on the LR grid) + HR + |panel - HR| for each HR-grid panel.

    Rows = the view with the largest field of view for isotropic ``scale``, axial/coronal/sagittal otherwise. All volumes in RAS-closest
    voxel order; ``spacing`` is the HR voxel size (mm) so every panel covers the same field of view.
    """
    names = list(panels)
    columns = [*names, "HR", *[f"|{n.split()[0]} - HR|" for n in names[1:]]]
    fov = np.asarray(hr.shape) * np.asarray(spacing)
    widest = max(_VIEWS, key=lambda v: fov[_in_plane(v)[0]] * fov[_in_plane(v)[1]])
    views = [widest] if len(set(scale)) == 1 else list(_VIEWS)
    lo, hi = np.percentile(hr, [0.5, 99.5])
    aspect = max(fov[_in_plane(v)[1]] / fov[_in_plane(v)[0]] for v in views)
    fig = Figure(figsize=(2.2 * len(columns), (2.2 * min(aspect, 2.0) + 0.4) * len(views)))
    axes = np.asarray(fig.subplots(len(views), len(columns), squeeze=False))
    for row, view in enumerate(views):
        axis = _VIEWS[view]
        index = hr.shape[axis] // 2
        shown = _in_plane(view)
        extent = [0.0, fov[shown[0]], 0.0, fov[shown[1]]]
        truth = _slice(hr, axis, index)
        upsampled = [_slice(panels[n], axis, index) for n in names[1:]]
        lr = _slice(panels[names[0]], axis, index // int(scale[axis]))
        images = [lr, *upsampled, truth, *[np.abs(u - truth) for u in upsampled]]
        for col, (title, image) in enumerate(zip(columns, images)):
            ax = axes[row, col]
            error = title.startswith("|")
            ax.imshow(image, cmap="magma" if error else "gray", origin="lower", extent=extent, interpolation="nearest",
                      vmin=0.0 if error else lo, vmax=0.25 * (hi - lo) if error else hi)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=8)
            if col == 0:
                ax.set_ylabel(view, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def _fmt(stat: dict[str, Any], digits: int) -> str:
    """mean ± std [CI] for an HTML cell."""
    mean = stat["mean"]
    if mean is None:
        return "–"
    if not math.isfinite(mean):
        return html.escape(str(mean))
    ci = f" [{stat['ci95'][0]:.{digits}f}, {stat['ci95'][1]:.{digits}f}]" if stat["ci95"] else ""
    return f"{mean:.{digits}f} ± {stat['std']:.{digits}f}{ci}"


def _table(header: Sequence[str], body: list[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def write_html(path: Path, summary: dict[str, Any], rows: list[dict[str, Any]], images: Sequence[Path],
               settings: dict[str, Any]) -> Path:
    """One self-contained page (inline CSS, relative links) with the tables and all ``images``."""
    digits = {"psnr": 2, "psnr_fg": 2, "ssim": 4, "ssim_fg": 4}
    best = summary["best_baseline"]
    method_rows = [[html.escape(m), *[_fmt(s[k], digits[k]) for k in METRICS], _fmt(s["seconds"], 2)]
                   for m, s in summary["methods"].items()]
    gain_rows = [[html.escape(m), html.escape(b), *[_fmt(g[b][k], digits[k]) for k in METRICS]]
                 for m, g in summary["gains"].items() for b in g]
    case_rows = [[html.escape(str(r[c])) if isinstance(r[c], str) else f"{r[c]:.4g}" for c in CSV_COLUMNS] for r in rows]
    figures = "".join(
        f'<figure><img src="{html.escape(p.relative_to(path.parent).as_posix())}" alt="{html.escape(p.stem)}">'
        f"<figcaption>{html.escape(p.stem)}</figcaption></figure>" for p in images
    )
    settings_list = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(json.dumps(v))}</li>" for k, v in settings.items())
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sr3d evaluation report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
img {{ max-width: 100%; border: 1px solid #ddd; }}
figure {{ margin: 1em 0; }}
</style></head><body>
<h1>Super-resolution evaluation</h1>
<ul>{settings_list}</ul>
<p>Data: <a href="metrics.csv">metrics.csv</a> (per case), <a href="summary.json">summary.json</a>.
Cells: mean ± std [95% CI of the mean].</p>
<h2>Methods</h2>
{_table(["method", *[_LABELS[k] for k in METRICS], "seconds"], method_rows)}
<h2>Paired gain of each model (best baseline: {html.escape(best)})</h2>
{_table(["model", "over", *[_LABELS[k] for k in METRICS]], gain_rows)}
<h2>Plots</h2>
{figures}
<h2>Per case</h2>
{_table(list(CSV_COLUMNS), case_rows)}
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path


def write_report(out_dir: Path, rows: list[dict[str, Any]], models: Sequence[str], baselines: Sequence[str],
                 settings: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """CSV, JSON summary, box plot and HTML (montages already in ``out_dir/plots``) -> (summary, html path)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "plots").mkdir(exist_ok=True)
    summary = {**summarize(rows, models, baselines), "settings": settings}
    write_csv(out_dir / "metrics.csv", rows)
    (out_dir / "summary.json").write_text(json.dumps(_jsonable(summary), indent=2))
    images = [box_plot(out_dir / "plots" / "boxplot.png", rows, [*models, *baselines])]
    images += sorted((out_dir / "plots").glob("montage_*.png"))
    return summary, write_html(out_dir / "report.html", summary, rows, images, settings)
