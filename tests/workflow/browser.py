"""The HTML report (`snakemake --report`) opened in a real headless browser: Debian's Chromium, driven by
Playwright (installed with apt when missing, as the slurm tests install their controller).

`report_figures_render` clicks every figure of the report's Figures category, checks that the page shows
the figure's own PNG at its own size, and that a screenshot of the shown figure is a drawing, not a
blank or broken image.
"""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np

CHROMIUM = "/usr/bin/chromium"
# as root, without a sandbox; no background connections (this machine's network is closed)
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def ensure_chromium() -> str:
    """Debian's Chromium, installed with apt when missing; returns its path."""
    if not Path(CHROMIUM).exists():
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
            if shutil.which(cmd[0]) is None:
                raise RuntimeError("the HTML report test needs Chromium at /usr/bin/chromium, or apt to install it")
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
            if out.returncode != 0:
                raise RuntimeError(f"`{' '.join(cmd)}` failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return CHROMIUM


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", header[16:24])


def drawn(screenshot: bytes) -> dict:
    """What a screenshot shows: its share of non-white pixels and its number of distinct colours."""
    import io

    from matplotlib.image import imread

    pixels = imread(io.BytesIO(screenshot), format="png")[..., :3]
    flat = (pixels.reshape(-1, 3) * 255).round().astype(np.uint8)
    return {"ink": float((flat.min(axis=1) < 200).mean()), "colours": len(np.unique(flat, axis=0))}


def report_figures_render(report_html: Path, figures_dir: Path, screenshots: Path) -> dict[str, dict]:
    """Open the report, show each figure; returns {figure name: {"size", "ink", "colours"}} of what the
    browser displayed. Screenshots are kept in `screenshots` for a person to look at."""
    from playwright.sync_api import sync_playwright

    screenshots.mkdir(parents=True, exist_ok=True)
    shown = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=ensure_chromium(), args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1600, "height": 1100})
        page.goto(report_html.resolve().as_uri())
        page.get_by_text("Figures", exact=True).click()
        names = [name.strip() for name in page.locator("tr td:first-child").all_inner_texts()]
        for name in names:
            page.locator("tr", has_text=name).first.locator("a[iconname=eye]").click()
            image = page.locator(f"img[src^='data:image/png'][src*='filename={name}.png']")
            image.wait_for(state="visible", timeout=10_000)
            size = page.evaluate("(e) => [e.naturalWidth, e.naturalHeight]", image.element_handle())
            picture = image.screenshot(path=str(screenshots / f"{name}.png"))
            shown[name] = {"size": tuple(size), "expected_size": png_size(figures_dir / f"{name}.png"),
                           **drawn(picture)}
        page.goto(report_html.resolve().as_uri())  # back to the start page, whose menu lists the categories
        page.get_by_text("Tables", exact=True).click()
        shown["tables"] = {"names": [n.strip() for n in page.locator("tr td:first-child").all_inner_texts()]}
        browser.close()
    return shown
