"""Open a report's index.html in headless Chromium, print the page's height in CSS pixels at a 1280-pixel-wide
window, and optionally write a full-page screenshot (scaled to --width pixels, 256 colours, to keep it small).

Usage:
    python scripts/report_screenshot.py bocb-results/report [--png docs/report-quick.png] [--width 640]
The height is measured by a copy of the page with one script added (document.documentElement.scrollHeight
after load); the screenshot is of the page itself. Needs chromium on PATH (apt-get install chromium).
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

WINDOW_WIDTH = 1280
MEASURE = ('<pre id="page-height"></pre><script>window.addEventListener("load", function () {'
           'document.getElementById("page-height").textContent = document.documentElement.scrollHeight;});'
           "</script></body>")


def chromium(*args: str, profile: Path) -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("no chromium on PATH (apt-get install chromium)")
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                           f"--user-data-dir={profile}", "--virtual-time-budget=10000", *args],
                          capture_output=True, text=True, timeout=300, check=True).stdout


def page_height(page: Path, work: Path) -> int:
    measured = page.with_name(f".height-{page.name}")  # beside the page: the same relative paths
    measured.write_text(page.read_text().replace("</body>", MEASURE, 1))
    try:
        dom = chromium(f"--window-size={WINDOW_WIDTH},900", "--dump-dom", measured.as_uri(), profile=work / "p1")
    finally:
        measured.unlink()
    return int(re.search(r'<pre id="page-height">(\d+)</pre>', dom).group(1))


def screenshot(page: Path, height: int, png: Path, width: int, work: Path) -> None:
    from PIL import Image  # matplotlib's dependency

    full = work / "full.png"
    chromium(f"--window-size={WINDOW_WIDTH},{height}", f"--screenshot={full}", page.as_uri(), profile=work / "p2")
    image = Image.open(full).convert("RGB")
    scaled = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    png.parent.mkdir(parents=True, exist_ok=True)
    scaled.quantize(colors=256).save(png, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a report directory (holding index.html) or the page itself")
    parser.add_argument("--png", type=Path, help="write a full-page screenshot here")
    parser.add_argument("--width", type=int, default=640, help="the screenshot's width in pixels")
    args = parser.parse_args()
    page = (args.report / "index.html" if args.report.is_dir() else args.report).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        height = page_height(page, Path(tmp))
        print(f"{page}: {height} px tall at a {WINDOW_WIDTH} px wide window")
        if args.png:
            screenshot(page, height, args.png, args.width, Path(tmp))
            print(f"screenshot: {args.png} ({args.png.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
