#!/usr/bin/env python3
"""Render an evaluation report in headless Chromium and check that every image loads.

    python scripts/check_report_browser.py outputs/evaluate/<run>/report.html [--chromium chromium]

Needs Debian's chromium (`apt-get install -y chromium`); not part of CI. A copy of the page with a small
script appended is written beside the report (so relative links resolve), rendered with --dump-dom,
and removed; the script records, after the load event, how many <img> have naturalWidth > 0.
Exit 0 when the page rendered and all images loaded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

PROBE = """
<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const broken = imgs.filter((im) => !(im.complete && im.naturalWidth > 0)).map((im) => im.getAttribute("src"));
  const out = document.createElement("pre");
  out.id = "image-check";
  out.textContent = JSON.stringify({total: imgs.length, broken: broken, title: document.title});
  document.body.appendChild(out);
});
</script>
"""
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--virtual-time-budget=10000",
]


def check(report: Path, chromium: str) -> dict:
    """Render ``report`` and return {"total", "broken", "title"} from the in-page probe."""
    page = report.read_text(encoding="utf-8")
    probe_page = report.with_name(f".{report.stem}.{uuid.uuid4().hex}.check.html")
    probe_page.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        proc = subprocess.run(
            [chromium, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", probe_page.resolve().as_uri()],
            capture_output=True, text=True, timeout=120,
        )
    finally:
        probe_page.unlink(missing_ok=True)
        shutil.rmtree(profile, ignore_errors=True)
    match = re.search(r'<pre id="image-check">(.*?)</pre>', proc.stdout, re.S)
    if not match:
        raise RuntimeError(f"chromium did not render the page (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("report", type=Path, help="report.html written by python -m app.evaluate")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium", help="browser executable")
    args = parser.parse_args()
    if not args.report.is_file():
        print(f"error: {args.report}: no such file", file=sys.stderr)
        return 1
    try:
        result = check(args.report, args.chromium)
    except (OSError, RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    ok = result["total"] > 0 and not result["broken"]
    print(f"{args.report}: rendered '{result['title']}', {result['total'] - len(result['broken'])}/{result['total']} "
          f"images loaded" + ("" if ok else f"; broken: {result['broken']}"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
