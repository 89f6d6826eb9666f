"""Where the volumes come from: a folder/glob, a CSV or JSON list, or a split manifest -> train/val/test items."""
from __future__ import annotations

import csv
import glob
import json
import logging
import random
from pathlib import Path

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
ITEM_KEYS = ("image", "gm", "wm", "csf")
Item = dict[str, str]


def _resolve(entry: str | dict, base: Path) -> Item:
    """One list entry (a path or a dict with "image" and optional tissue maps) -> dict of absolute paths."""
    raw = {"image": entry} if isinstance(entry, str) else dict(entry)
    if "image" not in raw:
        raise ValueError(f"list entry {entry!r} has no 'image' key")
    return {k: str((base / raw[k]).resolve()) for k in ITEM_KEYS if raw.get(k)}


def _read_list(list_file: Path) -> tuple[list[Item], dict[str, list[Item]] | None]:
    """Read a CSV (column image, optional gm/wm/csf/split) or JSON (list, or {"train": [...], ...}) list."""
    base = list_file.parent
    if list_file.suffix.lower() == ".json":
        content = json.loads(list_file.read_text())
        if isinstance(content, dict):
            unknown = set(content) - set(SPLITS)
            if unknown or "train" not in content:
                raise ValueError(f"{list_file}: a split manifest needs a 'train' key and only {SPLITS}, got {sorted(content)}")
            return [], {s: [_resolve(e, base) for e in content.get(s, [])] for s in SPLITS}
        if not isinstance(content, list):
            raise ValueError(f"{list_file}: expected a JSON list or a {{'train': [...], ...}} manifest")
        return [_resolve(e, base) for e in content], None
    if list_file.suffix.lower() == ".csv":
        with list_file.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or "image" not in rows[0]:
            raise ValueError(f"{list_file}: CSV needs a header with an 'image' column")
        if "split" in rows[0]:
            bad = {r["split"] for r in rows} - set(SPLITS)
            if bad:
                raise ValueError(f"{list_file}: unknown split value(s) {sorted(bad)}; use {SPLITS}")
            return [], {s: [_resolve(r, base) for r in rows if r["split"] == s] for s in SPLITS}
        return [_resolve(r, base) for r in rows], None
    raise ValueError(f"{list_file}: list files must end in .json or .csv")


def _glob(root: str, pattern: str) -> list[Item]:
    """Files under folder ``root`` matching ``pattern`` (or ``root`` itself as a glob), sorted."""
    path = Path(root).expanduser()
    paths = sorted(Path(p) for p in glob.glob(str(path / pattern) if path.is_dir() else str(path), recursive=True))
    return [{"image": str(p.resolve())} for p in paths if p.is_file()]


def split_items(items: list[Item], val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[Item]]:
    """Deterministic shuffle (by ``seed``, independent of listing order) then cut into train/val/test."""
    if len(items) < 2:
        raise ValueError(
            f"found {len(items)} volume(s); a split needs at least 2 (train + val). "
            "For one volume, give a JSON manifest {'train': [...], 'val': [...]} (regions of it, or the same file)."
        )
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError(f"need val_fraction, test_fraction >= 0 with sum < 1, got {val_fraction}, {test_fraction}")
    shuffled = sorted(items, key=lambda it: it["image"])
    random.Random(seed).shuffle(shuffled)
    n = len(shuffled)
    n_val = max(1, round(n * val_fraction))
    n_test = min(round(n * test_fraction), n - n_val - 1)
    return {"val": shuffled[:n_val], "test": shuffled[n_val : n_val + n_test], "train": shuffled[n_val + n_test :]}


def load_split_items(
    list_file: str | None = None,
    root: str | None = None,
    pattern: str = "*.nii*",
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> dict[str, list[Item]]:
    """Train/val/test item dicts ({"image": path, optional "gm"/"wm"/"csf"}) from a list file or a folder/glob."""
    if (list_file is None) == (root is None):
        raise ValueError("set exactly one of data.list_file (CSV/JSON) or data.root (folder or glob)")
    if list_file is not None:
        path = Path(list_file).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"data list not found: {path}")
        items, splits = _read_list(path)
    else:
        items, splits = _glob(str(root), pattern), None
        if not items:
            raise FileNotFoundError(f"no files match {pattern!r} under {root}")
    if splits is None:
        splits = split_items(items, val_fraction, test_fraction, seed)
    missing = [p for s in splits.values() for it in s for p in it.values() if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} listed file(s) missing, e.g. {missing[0]}")
    if not splits["train"] or not splits["val"]:
        raise ValueError(f"need at least one train and one val volume, got {[len(splits[s]) for s in SPLITS]}")
    log.info("data: %s", ", ".join(f"{len(splits[s])} {s}" for s in SPLITS))
    return splits
