"""Draw every sample's picture, and the tiny flow models of the tests, and screenshot each SVG in a
headless Chromium, to look at them as a user's browser shows them.

For each samples/*.py (batch 2, Adam, the automatic depth) and each model in
tests/flow_models.py: OUT/NAME.svg with the embedded engine (what `pip install` has), then
OUT/NAME.png by `chromium --headless --screenshot`; with --timelines also the memory timeline
(graphcalc.output.plots) as OUT/NAME.timeline.svg and .png. Without chromium (or chromium-browser,
google-chrome) on PATH it writes the SVGs and says it skipped the screenshots.

Usage:
  .venv/bin/python bench/screenshots.py                 # into /tmp/graphcalc-screenshots
  .venv/bin/python bench/screenshots.py --out DIR --only unet resnet18
  .venv/bin/python bench/screenshots.py --timelines --only seed_cnn gpt2
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("GRAPHCALC_RENDER_ENGINE", "embedded")

from graphcalc.output import render  # noqa: E402
from graphcalc.commands.analyze import analyze_file, analyze_module  # noqa: E402
from graphcalc.options import Options  # noqa: E402

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars")


def reports(only: list[str] | None):
    """(name, report) of each sample and flow model, batch 2 with Adam."""
    import flow_models

    options = Options(batch=2, optimizer="adam")
    for path in sorted((ROOT / "samples").glob("*.py")):
        if not only or path.stem in only:
            yield path.stem, analyze_file(str(path), options)
    for name, (build, inputs) in flow_models.MODELS.items():
        if not only or name in only:
            yield name, analyze_module(build(), inputs, options)


def svg_size(svg: bytes) -> tuple[int, int]:
    """The SVG's width and height in CSS pixels (Graphviz writes them in pt: 1pt = 4/3 px)."""
    head = svg[:2000].decode(errors="replace")
    tag = re.search(r"<svg[^>]*>", head).group(0)
    if 'pt"' not in tag:  # graphcalc.output.plots: sized in px
        w, h = (float(re.search(rf'{k}="([\d.]+)"', head).group(1)) for k in ("width", "height"))
        return int(w) + 16, int(h) + 16
    w, h = (float(re.search(rf'{k}="([\d.]+)pt"', head).group(1)) for k in ("width", "height"))
    return int(w * 4 / 3) + 16, int(h * 4 / 3) + 16


def screenshot(browser: str, svg_path: Path, png_path: Path, size: tuple[int, int]) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}",
                        f"--screenshot={png_path}", f"--window-size={size[0]},{size[1]}",
                        svg_path.as_uri()], check=True, capture_output=True, timeout=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/graphcalc-screenshots")
    ap.add_argument("--only", nargs="*", help="sample or flow-model names")
    ap.add_argument("--timelines", action="store_true", help="the memory timelines too")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    browser = next((b for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        print("no chromium on PATH: writing the SVGs only, no screenshots")
    from graphcalc.output.plots import timeline_svg

    for name, report in reports(args.only):
        pictures = [(name, render.render(report, "svg"))]
        if args.timelines:
            pictures.append((f"{name}.timeline", timeline_svg(report).encode()))
        for stem, svg in pictures:
            svg_path = out / f"{stem}.svg"
            svg_path.write_bytes(svg)
            if browser is None:
                print(svg_path)
                continue
            png = out / f"{stem}.png"
            size = svg_size(svg)
            screenshot(browser, svg_path, png, size)
            print(f"{png}  {size[0]}×{size[1]} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
