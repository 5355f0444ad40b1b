"""#28 item 5: the web app's "Audit a dataset" tab: an audit folder opened (`gradcam serve --audit`), a zip
of photos audited, both in headless Chromium; zips and reports are not trusted."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
from PIL import Image

gradio = pytest.importorskip("gradio", reason="the web extra is not installed (pip install 'gradcam[web]')")

from browser import headless_page  # noqa: E402
from conftest import audit_planted  # noqa: E402
from gradcam.apps.cli import main  # noqa: E402
from gradcam.apps.web import build_app  # noqa: E402
from gradcam.apps.web_audit import (  # noqa: E402
    EXPERIMENT_CAPTION,
    MAX_ZIP_PHOTOS,
    audit_upload,
    read_audit,
    unpack_photos,
)
from gradcam.apps.web_state import AppError  # noqa: E402
from test_web import free_port  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def planted_audit(planted_shortcut, tmp_path_factory):
    data = planted_shortcut
    out = tmp_path_factory.mktemp("web-audit") / "planted"
    audit_planted(data, out, "--prove", "cat")
    return out


def test_an_audit_folder_is_read_into_the_tabs_view(planted_audit):
    view = read_audit(planted_audit)
    assert view.table[0][0] == "stamped" and view.table[0][-1]  # by shortcut score; its reasons
    assert "1 class flagged" in view.summary and "stamped (flagged)" in view.details
    assert "cat (tested on request)" in view.details and "Experiment:" in view.details
    captions = [caption for _, caption in view.pictures]
    assert captions == [EXPERIMENT_CAPTION, "cluster 0 (24 photos): its mean map", EXPERIMENT_CAPTION]
    assert view.details.count('<img src="data:image/png;base64,') == 3
    assert [Path(f).name for f in view.files] == ["audit.html", "audit.json"]


def test_a_report_cannot_name_files_outside_its_folder_or_inject_markup(planted_audit, tmp_path):
    """A report is data: a picture path leading out of the audit's folder is not shown, and a class named
    with markup is shown as text."""
    folder = tmp_path / "crafted"
    shutil.copytree(planted_audit, folder)
    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8), "red").save(secret)
    report = json.loads((folder / "audit.json").read_text())
    report["classes"][0]["name"] = "<img src=x onerror=alert(1)>"
    report["classes"][0]["evidence"]["picture"] = "../secret.png"
    (folder / "audit.json").write_text(json.dumps(report))
    view = read_audit(folder)
    assert "<img src=x" not in view.details and "&lt;img src=x onerror=alert(1)&gt;" in view.details
    assert view.pictures and all(picture.size != (8, 8) for picture, _ in view.pictures)  # the secret not read
    # stamped's experiment picture is gone; its cluster's map and cat's experiment are its own folder's
    assert [caption for _, caption in view.pictures] == ["cluster 0 (24 photos): its mean map", EXPERIMENT_CAPTION]
    (folder / "audit.json").write_text("{not json")
    with pytest.raises(AppError, match="not a readable gradcam audit"):
        read_audit(folder)


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)
    return path


def _jpeg(photo: str = "chelsea", turn: int = 0) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.open(EXAMPLES / f"{photo}.jpg").rotate(turn).save(buffer, "JPEG")
    return buffer.getvalue()


def test_a_zip_is_unpacked_within_its_folder_and_its_limits(tmp_path):
    root, by_class = unpack_photos(_zip(tmp_path / "ok.zip", {
        "set/Egyptian cat/a.jpg": _jpeg(), "set/espresso/b.jpg": _jpeg("coffee"), "set/notes.txt": b"x",
    }), tmp_path / "ok")  # fmt: skip
    assert by_class and root == tmp_path / "ok" / "photos" / "set"
    assert sorted(p.name for p in root.rglob("*") if p.is_file()) == ["a.jpg", "b.jpg"]
    flat, by_class = unpack_photos(_zip(tmp_path / "flat.zip", {"a.jpg": _jpeg()}), tmp_path / "flat")
    assert not by_class and flat == tmp_path / "flat" / "photos"
    with pytest.raises(AppError, match="points outside the zip"):
        unpack_photos(_zip(tmp_path / "slip.zip", {"../../evil.jpg": _jpeg()}), tmp_path / "slip")
    assert not (tmp_path / "evil.jpg").exists()
    with pytest.raises(AppError, match=f"more than {MAX_ZIP_PHOTOS} photos"):
        unpack_photos(_zip(tmp_path / "many.zip", {f"{i}.jpg": b"x" for i in range(MAX_ZIP_PHOTOS + 1)}),
                      tmp_path / "many")  # fmt: skip
    with pytest.raises(AppError, match="more than 200 MB"):  # 201 MB of zeros in a 200 KB zip
        unpack_photos(_zip(tmp_path / "bomb.zip", {"bomb.png": bytes(201 * 2**20)}), tmp_path / "bomb")
    (tmp_path / "not.zip").write_bytes(b"plain text")
    with pytest.raises(AppError, match="not a zip file"):
        unpack_photos(tmp_path / "not.zip", tmp_path / "not")
    with pytest.raises(AppError, match="no photos in the zip"):
        unpack_photos(_zip(tmp_path / "empty.zip", {"readme.txt": b"x"}), tmp_path / "empty")


def test_a_zip_of_photos_by_class_is_audited_with_a_served_model(tmp_path):
    from gradcam.io.models import load_bundle

    archive = _zip(tmp_path / "pets.zip", {
        **{f"Egyptian cat/{turn}.jpg": _jpeg("chelsea", turn) for turn in (0, 5, 10)},
        **{f"espresso/{turn}.jpg": _jpeg("coffee", turn) for turn in (0, 5, 10)},
    })  # fmt: skip
    out = audit_upload(archive, load_bundle("efficientnet_lite0"), tmp_path / "scratch")
    report = json.loads((out / "audit.json").read_text())
    assert report["summary"]["audited"] == 6 and report["summary"]["photos_with_truth"] == 6
    assert {c["name"] for c in report["classes"]} == {"Egyptian cat", "espresso"}
    assert not (tmp_path / "scratch" / "photos").exists()  # the photos go once the audit has drawn them


def test_the_audit_tab_in_a_real_browser(planted_audit, tmp_path, capfd):
    archive = _zip(tmp_path / "pets.zip", {
        **{f"Egyptian cat/{turn}.jpg": _jpeg("chelsea", turn) for turn in (0, 5, 10)},
        **{f"espresso/{turn}.jpg": _jpeg("coffee", turn) for turn in (0, 5, 10)},
    })  # fmt: skip
    app = build_app(None, audits=[planted_audit])
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with headless_page(1400, 1000) as page:
            page.goto(f"http://127.0.0.1:{port}")
            page.get_by_role("tab", name="Audit a dataset").click()
            page.locator("#audit-choice input").click()
            page.get_by_role("option", name="planted").click()
            page.locator("#audit-status").get_by_text("Opened the audit planted.").wait_for(timeout=30_000)
            assert "1 class flagged" in page.locator("#audit-summary").inner_text()
            page.locator("#audit-table").get_by_text("stamped").first.wait_for(timeout=30_000)
            assert "the score depends on this region" in page.locator("#audit-details").inner_text()
            page.locator("#audit-details img").nth(2).wait_for(timeout=30_000)
            page.screenshot(path=str(tmp_path / "audit-tab.png"), full_page=True)
            page.locator("#audit-zip input[type=file]").set_input_files(str(archive))
            page.locator("#audit-run").click()
            page.locator("#audit-status").get_by_text("Audited pets.zip").wait_for(timeout=120_000)
            table = page.locator("#audit-table").inner_text()
            assert "Egyptian cat" in table and "espresso" in table
            assert page.locator("#audit-choice input").input_value() == ""  # no longer says "planted"
            page.screenshot(path=str(tmp_path / "audit-zip.png"), full_page=True)
    finally:
        app.close()
    assert "Traceback" not in capfd.readouterr().err


def test_serve_refuses_a_folder_without_an_audit(tmp_path, capsys):
    assert main(["serve", "--audit", str(tmp_path), "--port", str(free_port())]) == 2
    error = capsys.readouterr().err
    assert "--audit:" in error and "audit.json: not a readable gradcam audit" in error and error[-1] == "\n"
