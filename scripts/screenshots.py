"""Retake the README's pictures: the overlay and channel grid of chelsea, the HTML report, the web app,
the audit page of the planted shortcut.

    python scripts/screenshots.py            # needs the web extra, Playwright and Debian's chromium
    python scripts/screenshots.py audit      # only docs/audit-page.png (scripts/shortcut_demo.py, 30 a class)

Writes docs/chelsea-overlay.png, docs/chelsea-channels.png, docs/coffee-overlay.png, docs/report.png,
docs/web-app.png and docs/audit-page.png from the example photos and the embedded model (offline).
"""

from __future__ import annotations

import shutil
import socket
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from browser import headless_page  # noqa: E402
from gradcam.apps.cli import main  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main_() -> None:
    docs = ROOT / "docs"
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "out"
        argv = ["explain", str(ROOT / "examples"), "--out", str(out), "--per-channel", "8", "--target", "top2"]
        assert main([*argv, "--quiet", "--format", "png"]) == 0  # the README shows PNGs (legends by default)
        shutil.copy(out / "chelsea.gradcam.282-tiger_cat.png", docs / "chelsea-overlay.png")
        shutil.copy(out / "chelsea.gradcam.282-tiger_cat.channels.png", docs / "chelsea-channels.png")
        shutil.copy(out / "coffee.gradcam.967-espresso.png", docs / "coffee-overlay.png")
        with headless_page(1400, 1000) as page:
            page.goto((out / "index.html").as_uri())
            page.wait_for_function("[...document.images].filter(i => i.checkVisibility()).every(i => i.complete)")
            page.screenshot(path=str(docs / "report.png"))
    from gradcam.apps.web import PAGE_CSS, build_app

    app = build_app(None)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, css=PAGE_CSS)
    try:
        with headless_page(1400, 1100) as page:
            page.goto(f"http://127.0.0.1:{port}")
            page.locator("#photo input[type=file]").set_input_files(str(ROOT / "examples" / "astronaut.jpg"))
            page.locator("#photo img").first.wait_for(timeout=30_000)
            page.locator("#methods input").fill("layercam")
            page.locator("#methods input").press("Enter")
            page.locator("#target textarea").fill("top2")
            page.locator("#explain").click()
            page.locator("#overlays img").nth(3).wait_for(timeout=60_000)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(docs / "web-app.png"), full_page=True)
    finally:
        app.close()


def audit_page() -> None:
    """The planted-shortcut demo's audit page: the class table and the flagged class's page."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import shortcut_demo

    with tempfile.TemporaryDirectory() as scratch:
        shortcut_demo.main([scratch, "--per-class", "30"])
        with headless_page(1300, 1250) as page:
            page.goto((Path(scratch) / "audit" / "audit.html").as_uri())
            page.wait_for_function("[...document.images].every(i => i.complete)")
            page.screenshot(path=str(ROOT / "docs" / "audit-page.png"))


if __name__ == "__main__":
    if sys.argv[1:] != ["audit"]:
        main_()
    audit_page()
