"""File names are data: a crafted name must never run script in a shared ``index.html`` (issue 10, case 10).

A photo named ``<!--<script>.jpg`` used to blank the whole page: ``<!--`` inside the inline JSON put the
HTML parser into its "script data escaped" state, so the rest of the page was read as script.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from browser import headless_page
from gradcam.apps.cli import main
from gradcam.render.report import json_for_script

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CRAFTED = [  # paths under the photo folder; '/' cannot be in a name, so "</script>" spans a folder
    "<!--<script>.jpg",
    "</script><img src=x onerror=window.pwned=1>.jpg",
    "<img src=x onerror=window.pwned=2>.jpg",
    "javascript:window.pwned=3;.jpg",
    "a&amp;b #1?.jpg",
]


def test_inline_json_has_no_markup_characters():
    text = json_for_script({"path": "</script><!--<script>&"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"path": "</script><!--<script>&"}


@pytest.fixture
def crafted_run(tmp_path: Path) -> Path:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in CRAFTED:
        (photos / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(EXAMPLES / "chelsea.jpg", photos / name)
    (photos / "<b>broken<").mkdir()
    (photos / "<b>broken</b>.jpg").write_text("not an image")  # a failed card shows its name and error too
    out = tmp_path / "out"
    assert main(["explain", str(photos), "--out", str(out), "--workers", "0", "--quiet"]) == 1
    return out


def test_crafted_file_names_run_no_script_in_the_report(crafted_run, tmp_path):
    with headless_page() as page:
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto((crafted_run / "index.html").as_uri())
        page.locator(".card").first.wait_for(timeout=30_000)
        assert page.locator(".card").count() == len(CRAFTED) + 1
        titles = page.locator(".card h2").all_inner_texts()
        shown = sorted(Path(t).relative_to(crafted_run.parent / "photos").as_posix() for t in titles)
        assert shown == sorted([*CRAFTED, "<b>broken</b>.jpg"])
        assert page.evaluate("window.pwned") is None and not dialogs
        assert page.locator(".card img[alt='gradcam for tiger cat']").count() == len(CRAFTED)
        loaded = page.evaluate(
            "Promise.all([...document.querySelectorAll('.card img')].map(i => i.decode().then(() => i.naturalWidth)))"
        )
        assert all(width > 0 for width in loaded)  # every link, '#' and '?' included, finds its file
        page.screenshot(path=str(tmp_path / "crafted.png"), full_page=True)
