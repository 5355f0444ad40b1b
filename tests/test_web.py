"""The web app: its logic directly, then the real page in headless Chromium."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

gradio = pytest.importorskip("gradio", reason="the web extra is not installed (pip install 'gradcam[web]')")

from browser import headless_page  # noqa: E402
from gradcam.apps.web import (  # noqa: E402
    PAGE_CSS,
    AppError,
    build_app,
    cached_model,
    explain_photo,
    model_choices,
    photo_concepts_picture,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_explain_photo_side_by_side_with_downloads(tmp_path):
    result = explain_photo(str(EXAMPLES / "coffee.jpg"), "efficientnet_lite0", ["gradcam", "layercam"], None, "",
                           0.5, "jet", out_dir=tmp_path)  # fmt: skip
    assert next(iter(result.top5)) == "espresso"
    assert [caption.split(":")[0] for _, caption in result.overlays] == ["gradcam", "layercam"]
    assert result.overlays[0][0].size == (600, 400)  # the photo's own resolution
    assert result.grid is not None
    suffixes = sorted(Path(f).suffix for f in result.files)
    assert suffixes == [".json", ".npy", ".npy", ".png", ".png"]


def test_explain_photo_errors_are_messages(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(AppError, match="notes.jpg: not a readable image"):
        explain_photo(str(text), "efficientnet_lite0", ["gradcam"], None, "", 0.5, "jet")
    with pytest.raises(AppError, match="Upload, paste or pick a photo first"):
        explain_photo(None, "efficientnet_lite0", ["gradcam"], None, "", 0.5, "jet")
    with pytest.raises(AppError, match="did you mean 'tiger cat'"):
        explain_photo(str(EXAMPLES / "chelsea.jpg"), "efficientnet_lite0", ["gradcam"], None, "tigre cat", 0.5, "jet")
    with pytest.raises(AppError, match="model 'resnet5O' is not served here .* gradcam serve --models resnet5O"):
        explain_photo(str(EXAMPLES / "chelsea.jpg"), "resnet5O", ["gradcam"], None, "", 0.5, "jet")
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff" * (21 * 1024 * 1024))
    with pytest.raises(AppError, match="over 20 MB"):
        explain_photo(str(big), "efficientnet_lite0", ["gradcam"], None, "", 0.5, "jet")


def test_offline_models_come_first():
    assert model_choices()[0] == "efficientnet_lite0"


def test_requests_are_bounded_in_targets_and_files(tmp_path):
    """Issue 10, case 7: top1000 wrote 2,001 files in 78 s; every request left a folder behind."""
    import gradcam
    from gradcam.apps import web

    with pytest.raises(AppError, match="more than this page draws"):
        explain_photo(str(EXAMPLES / "chelsea.jpg"), "efficientnet_lite0", ["gradcam"], None, "top1000", 0.5, "jet")
    with pytest.raises(AppError, match="more than this page draws"):
        explain_photo(str(EXAMPLES / "chelsea.jpg"), "efficientnet_lite0", gradcam.methods()[:4], None,
                      "top9", 0.5, "jet")  # fmt: skip
    space = web.ScratchSpace(keep=3)
    folders = [space.new_folder() for _ in range(5)]
    assert [f.exists() for f in folders] == [False, False, True, True, True]
    result = explain_photo(str(EXAMPLES / "chelsea.jpg"), "efficientnet_lite0", ["gradcam"], None, "", 0.5, "jet")
    assert Path(result.files[0]).parent.parent == web.scratch().root


def test_only_models_named_at_start_are_offered_and_loaded_before_listening(monkeypatch):
    from gradcam.apps import web, web_state

    loaded = []
    monkeypatch.setattr(
        web_state, "load_bundle", lambda name, weights=None, labels=None, **_: loaded.append(name) or _bundle()
    )
    shelf = web.ModelShelf(["efficientnet_lite0", "resnet18"])
    shelf.load_all()
    assert loaded == ["efficientnet_lite0", "resnet18"]
    shelf.get("resnet18")
    assert loaded == ["efficientnet_lite0", "resnet18"]  # once each
    with pytest.raises(AppError, match="not served here"):
        shelf.get("timm:resnet34")
    assert loaded == ["efficientnet_lite0", "resnet18"]  # an unserved name loads nothing


def _bundle():
    from gradcam.io.models import load_model

    return load_model("efficientnet_lite0", "none")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def running_app():
    app = build_app(None)  # the example photos shipped inside the package
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, css=PAGE_CSS)
    yield f"http://127.0.0.1:{port}"
    app.close()


def test_in_a_real_browser(running_app, tmp_path, capfd):
    with headless_page() as page:
        page.goto(running_app)
        page.get_by_text("Examples").first.wait_for(timeout=30_000)  # the package's photos are offered
        page.locator("#explain").click()  # no photo yet: a message in the page, no traceback anywhere
        page.locator("#status").get_by_text("Upload, paste or pick a photo first.").wait_for(timeout=30_000)
        page.locator("#photo input[type=file]").set_input_files(str(EXAMPLES / "astronaut.jpg"))
        page.locator("#photo img").first.wait_for(timeout=30_000)
        assert page.locator("#explain").bounding_box()["y"] < 1000  # in the first screen, above the options
        page.locator("#explain").click()
        page.locator("#status").get_by_text("1 method(s), one target: side by side").wait_for(timeout=60_000)
        one = page.locator("#overlays img").first.bounding_box()
        assert one["width"] <= 0.55 * page.locator("#overlays").bounding_box()["width"]  # not blown up
        page.locator("#methods input").fill("layercam")
        page.locator("#methods input").press("Enter")
        page.locator("#target textarea").fill("top2")
        page.locator("#explain").click()
        page.locator("#status").get_by_text("2 method(s) by row, 2 target(s) by column").wait_for(timeout=60_000)
        page.locator("#overlays img").nth(3).wait_for(timeout=60_000)
        fits = page.evaluate("[...document.querySelectorAll('#overlays img')].map(i => getComputedStyle(i).objectFit)")
        assert fits and set(fits) == {"contain"}  # a portrait photo keeps its top and bottom
        cut = page.evaluate("[...document.querySelectorAll('#overlays .caption-label')]"
                            ".filter(c => c.scrollWidth > c.clientWidth + 1).length")  # fmt: skip
        assert cut == 0  # every caption whole: "layercam: Egyptian cat, logit 8.96, p = 0.34"
        assert "Feature maps adding up to the gradcam map for" in page.locator("#grid").inner_text()
        assert "heat: low" in page.locator("#scale").inner_text()
        page.locator("#anyclass input").fill("bobsled")  # any of the 1,000 classes, from the kept maps
        page.locator("#anyclass input").press("Enter")
        page.locator("#anyclass-map").get_by_text("gradcam for bobsled (no model run)").wait_for(timeout=30_000)
        page.locator("#anyclass-map img").first.wait_for(timeout=30_000)
        page.get_by_text("Concepts: what the model sees").click()  # open the accordion
        page.locator("#concepts").click()
        page.locator("#concepts-map").get_by_text("4 concepts of this photo at layer bn2").wait_for(timeout=60_000)
        page.locator("#concepts-map img").first.wait_for(timeout=30_000)
        page.screenshot(path=str(tmp_path / "web-app.png"), full_page=True)
    assert "Traceback" not in capfd.readouterr().err
    assert (tmp_path / "web-app.png").stat().st_size > 10_000


def test_examples_ship_inside_the_package(tmp_path):
    from gradcam.apps.web import example_photos

    assert [Path(p).name for p in example_photos(None)] == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg"]
    (tmp_path / "a.png").write_bytes((EXAMPLES / "coffee.jpg").read_bytes())
    (tmp_path / "notes.txt").write_text("not a photo")
    assert [Path(p).name for p in example_photos(tmp_path)] == ["a.png"]  # not only *.jpg


def test_serve_command_warns_when_opened_to_the_network(monkeypatch, capsys):
    import gradcam.apps.web
    from gradcam.apps.cli import main

    calls = []
    monkeypatch.setattr(gradcam.apps.web, "serve", lambda host, port, examples, **_: calls.append((host, port)))
    assert main(["serve"]) == 0
    assert calls[-1] == ("127.0.0.1", 7860) and "warning" not in capsys.readouterr().err
    assert main(["serve", "--host", "0.0.0.0", "--port", "8000"]) == 0
    assert calls[-1] == ("0.0.0.0", 8000)
    assert "warning: listening on 0.0.0.0" in capsys.readouterr().err


def test_a_tiny_upload_that_decodes_huge_is_refused(tmp_path):
    """Issue 10, case 2: a 100-byte 10000 x 1 PNG took the server to 4.7 GB."""
    from PIL import Image

    wide = tmp_path / "wide.png"
    Image.new("L", (10000, 1)).save(wide)
    assert wide.stat().st_size < 200
    with pytest.raises(AppError, match="wide.png: 10000x1 has an aspect ratio of 10000:1"):
        explain_photo(str(wide), "efficientnet_lite0", ["gradcam"], None, "", 0.5, "jet", out_dir=tmp_path)


def test_a_fine_tuned_checkpoint_with_its_labels_is_served(tmp_path, monkeypatch):
    import torch
    import torchvision

    from gradcam.apps import web
    from gradcam.apps.cli import main

    torch.manual_seed(0)
    path = tmp_path / "ft.pth"
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), path)
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\ncup\n")
    monkeypatch.setattr(web, "SHELF", web.ModelShelf(["resnet18"], {"resnet18": str(path)}, {"resnet18": str(names)}))
    result = explain_photo(str(EXAMPLES / "chelsea.jpg"), "resnet18", ["gradcam"], None, "dog", 0.5, "jet",
                           out_dir=tmp_path)  # fmt: skip
    assert set(result.top5) == {"cat", "dog", "cup"} and result.overlays[0][1].startswith("gradcam: dog")
    shelves = []
    monkeypatch.setattr(web, "serve", lambda host, port, examples, models, audits: shelves.append(models))
    assert main(["serve", "--models", "resnet18", "--weights", str(path), "--labels", str(names)]) == 0
    assert shelves[-1].weights == {"resnet18": str(path)} and shelves[-1].labels == {"resnet18": str(names)}
    assert main(["serve", "--models", "resnet18,vgg19", "--weights", str(path)]) == 2


def test_one_method_that_cannot_explain_the_photo_leaves_the_others_shown(tmp_path):
    """#27: legrad picked beside gradcam on a CNN wiped every result; now gradcam's overlay is shown and
    legrad's reason said. Methods that read a transformer's attention are not offered for a CNN at all."""
    from gradcam.apps.web import method_choices

    result = explain_photo(str(EXAMPLES / "coffee.jpg"), "efficientnet_lite0", ["gradcam", "legrad"], None, "", 0.5,
                           "jet", out_dir=tmp_path)  # fmt: skip
    assert len(result.overlays) == 1 and result.overlays[0][1].startswith("gradcam: espresso")
    assert len(result.failures) == 1 and result.failures[0].startswith("legrad: legrad explains vision transformers")
    manifest = json.loads(Path(result.files[-1]).read_text())
    assert manifest["methods"] == ["gradcam"]
    choices = method_choices("efficientnet_lite0")
    assert "gradcam" in choices and "legrad" not in choices and "gradeclip" not in choices
    with pytest.raises(AppError, match="legrad"):  # nothing could be explained: the reason, as before
        explain_photo(str(EXAMPLES / "coffee.jpg"), "efficientnet_lite0", ["legrad"], None, "", 0.5, "jet",
                      out_dir=tmp_path / "alone")  # fmt: skip


def test_captions_say_what_the_score_is(tmp_path):
    result = explain_photo(str(EXAMPLES / "coffee.jpg"), "efficientnet_lite0", ["gradcam"], None, "", 0.5, "jet",
                           out_dir=tmp_path)  # fmt: skip
    assert result.overlays[0][1].startswith("gradcam: espresso, logit 11.") and result.overlays[0][1].endswith(
        "p = 0.95"
    )


def test_any_class_is_drawn_from_the_kept_maps_without_running_the_model(tmp_path, monkeypatch):
    import numpy as np
    import torch

    from gradcam.apps import web

    result = explain_photo(str(EXAMPLES / "coffee.jpg"), "efficientnet_lite0", ["gradcam"], None, "", 0.5, "jet",
                           out_dir=tmp_path)  # fmt: skip
    assert result.every is not None and result.every.raw.shape == (1000, 7, 7)
    bundle = web.cached_model("efficientnet_lite0")
    monkeypatch.setattr(bundle.model, "forward", lambda *a: (_ for _ in ()).throw(AssertionError("model ran")))
    picture = result.every.draw("cup")
    assert picture.size == (600, 400)
    monkeypatch.undo()
    (tmp_path / "b").mkdir()
    asked = explain_photo(str(EXAMPLES / "coffee.jpg"), "efficientnet_lite0", ["gradcam"], None, "cup", 0.5, "jet",
                          out_dir=tmp_path / "b")  # fmt: skip
    difference = np.abs(np.asarray(picture, dtype=np.int16) - np.asarray(asked.overlays[0][0], dtype=np.int16))
    assert difference.max() <= 3  # float16 maps: within rounding of the same picture
    with pytest.raises(AppError, match="out of range"):
        result.every.draw("1000")
    assert torch.is_tensor(result.every.raw)


def test_concepts_of_one_photo():
    coffee = str(EXAMPLES / "coffee.jpg")
    picture, caption = photo_concepts_picture(coffee, "efficientnet_lite0", 3, None, load=cached_model)
    assert caption == "3 concepts of this photo at layer bn2 (Deep Feature Factorization)"
    assert picture.width == 600 and picture.height > 400  # the photo at its own size, the legend below
    with pytest.raises(AppError, match="Upload, paste or pick a photo first"):
        photo_concepts_picture(None, "efficientnet_lite0", 3, None, load=cached_model)
    with pytest.raises(AppError, match="between 1 and 8"):
        photo_concepts_picture(coffee, "efficientnet_lite0", 20, None, load=cached_model)


def test_method_options_reach_the_methods(tmp_path):
    plain = explain_photo(str(EXAMPLES / "coffee.jpg"), "efficientnet_lite0", ["dff"], None, "", 0.5, "jet",
                          out_dir=tmp_path / "a")  # fmt: skip
    one = explain_photo(str(EXAMPLES / "coffee.jpg"), "efficientnet_lite0", ["dff"], None, "", 0.5, "jet",
                        out_dir=tmp_path / "b", method_options="dff:k=1")  # fmt: skip
    assert plain.overlays[0][0].tobytes() != one.overlays[0][0].tobytes()
    with pytest.raises(AppError, match="no chosen method takes 'samples'"):
        explain_photo(str(EXAMPLES / "coffee.jpg"), "efficientnet_lite0", ["gradcam"], None, "", 0.5, "jet",
                      method_options="samples=3")  # fmt: skip


def test_the_model_runs_once_per_method(tmp_path):
    """The any-class menu's maps come from the first method's own forward pass (they took a second one)."""
    from gradcam.apps import web

    bundle = web.cached_model("efficientnet_lite0")
    calls: list[int] = []
    handle = bundle.model.register_forward_hook(lambda m, i, o: calls.append(1))
    try:
        result = explain_photo(str(EXAMPLES / "coffee.jpg"), "efficientnet_lite0", ["gradcam", "layercam"], None, "",
                               0.5, "jet", out_dir=tmp_path)  # fmt: skip
    finally:
        handle.remove()
    assert len(calls) == 2 and result.every is not None and result.every.method == "gradcam"


def test_other_inputs_are_explained_by_their_kind_or_refused_in_one_line(tmp_path):
    """#25: the web app took photos only; now a signal, a volume, an image array or a video goes through its
    kind's own run (the same files and record as `gradcam explain`), and anything else is one line."""
    from gradcam.apps.web_files import explain_upload
    from gradcam.io.models import load_bundle

    signal_model = load_bundle("py:tiny_models:TinySignal")
    np.save(tmp_path / "ecg.npy", np.random.default_rng(0).normal(size=(2, 64)).astype(np.float32))
    result = explain_upload(tmp_path / "ecg.npy", signal_model, "gradcam", "", 0.5, "jet", tmp_path / "a")
    assert result.picture.endswith(".plot.png") and Image.open(result.picture).size[0] > 100
    assert result.files[-1].endswith("results.json") and "a signal (2, 64)" in result.status
    manifest = json.loads(Path(result.files[-1]).read_text())
    assert manifest["kind"] == "signal" and manifest["images"][0]["kind"] == "signal"

    photo_model = load_bundle("efficientnet_lite0")
    np.save(tmp_path / "spec.npy", np.random.default_rng(1).random((60, 90)).astype(np.float32))
    result = explain_upload(tmp_path / "spec.npy", photo_model, "gradcam", "", 0.5, "jet", tmp_path / "b", "image")
    assert result.picture.endswith(".png") and "an image array (60, 90)" in result.status

    (tmp_path / "notes.txt").write_text("hello")
    refused = [
        (tmp_path / "notes.txt", signal_model, "", None, "not a file of a kind gradcam reads"),
        (tmp_path / "ecg.npy", signal_model, "top3,1", None, "--target"),
        (tmp_path / "ecg.npy", photo_model, "", None, "ecg.npy"),  # a photo model on a signal: the run fails
        (EXAMPLES / "coffee.jpg", photo_model, "", None, "a photo; put it in the Photo box"),
    ]
    for path, bundle, target, kind, said in refused:
        with pytest.raises(AppError) as error:
            explain_upload(path, bundle, "gradcam", target, 0.5, "jet", tmp_path / "c", kind)
        assert said in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_the_status_line_shows_the_users_text_as_text():
    """#26 item 3: a target typed as ![i](http://...) was rendered as Markdown (the image fetched)."""
    from gradcam.apps.web import as_text, failure

    shown = as_text("--target ![i](http://example.invalid/x.png): not a class <b>bold</b>")
    assert "](" not in shown.replace("\\](", "") and "<b>" not in shown.replace("\\<b\\>", "")
    import markdown_it

    html = markdown_it.MarkdownIt().render(shown)
    assert "<img" not in html and "<b>" not in html and "example.invalid" in html
    assert failure(AppError("x")).startswith("**Could not explain:** x")


def test_any_failure_of_a_request_is_its_status_line(monkeypatch, capsys):
    """Ten inputs gave a bare "Error" and a traceback in the log; now every failure is the status line."""
    from gradcam.apps import web

    def broken(*args, **kwargs):
        raise RuntimeError("something inside broke\nsecond line")

    monkeypatch.setattr(web, "explain_photo", broken)
    app = build_app()
    run = next(fn for fn in app.fns.values() if getattr(fn, "name", "") == "run")
    outputs = list(run.fn(str(EXAMPLES / "coffee.jpg"), "efficientnet_lite0", ["gradcam"], None, "", 0.5, "jet", "crop",
                          ""))[-1]  # fmt: skip
    assert "Could not explain:" in outputs[4] and "RuntimeError: something inside broke" in outputs[4]
    assert "second line" not in outputs[4]
    assert capsys.readouterr().err.count("\n") == 1


def _lying_png(path: Path, width: int, height: int) -> Path:
    """A small PNG whose header declares width x height grey pixels (its data compresses to almost nothing)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = zlib.compress(b"\x00" * (width + 1) * 64, 9)  # the first 64 rows only: a decoder would still allocate all
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return path


def test_an_upload_is_size_checked_before_anything_decodes_it(tmp_path):
    """#26 item 3: Gradio decoded and converted a 13000 x 13000 grey PNG (to RGB) before our check refused it;
    the photo box now hands the file over untouched and the header check refuses it."""
    from gradio.data_classes import FileData

    bomb = _lying_png(tmp_path / "grey.png", 13000, 13000)
    app = build_app()
    photo = next(block for block in app.blocks.values() if getattr(block, "elem_id", None) == "photo")
    assert photo.preprocess(FileData(path=str(bomb), orig_name="grey.png")) == str(bomb)  # not decoded
    with pytest.raises(AppError, match="megapixels"):
        explain_photo(str(bomb), "efficientnet_lite0", ["gradcam"], None, "", 0.5, "jet", out_dir=tmp_path / "o")


class Pause(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import time

        time.sleep(0.2)
        return x


class Slow(torch.nn.Module):
    """A served model whose head takes 200 ms a pass (scorecam runs the head once per chunk of channels: 64
    channels one at a time take 12.8 s, far from the bounds the tests below hold on a loaded machine)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, stride=8, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Sequential(
            Pause(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def test_one_request_cannot_hold_the_server_past_its_budget(monkeypatch):
    """#26 item 2: `sscam:samples=2000` kept a server busy for hours. Options are bounded, and each request has
    a time budget: past it, its next forward pass (of any module) ends it with one status line."""
    import time

    from gradcam.apps import web, web_state

    name = "py:test_web:Slow"
    monkeypatch.setattr(web, "SHELF", web.ModelShelf([name]))
    monkeypatch.setattr(web_state, "REQUEST_SECONDS", 0.5)
    app = build_app()
    run = next(fn for fn in app.fns.values() if getattr(fn, "name", "") == "run")
    start = time.monotonic()
    outputs = list(run.fn(str(EXAMPLES / "coffee.jpg"), name, ["scorecam"], "features", "", 0.5, "jet", "crop",
                          "batch_size=1"))[-1]  # fmt: skip
    assert time.monotonic() - start < 6  # 64 channels one at a time would take 12.8 s
    assert "ran past its 0.5 s budget" in outputs[4].replace("\\", "")
    fine = list(run.fn(str(EXAMPLES / "coffee.jpg"), name, ["gradcam"], "features", "", 0.5, "jet", "crop", ""))[-1]
    assert "1 method(s), one target" in fine[4]  # the next request has its own budget


def test_closing_the_page_stops_the_work(monkeypatch):
    """#26 item 2: a request's work went on after its client had gone. Gradio closes an event's generator at a
    yield when its page goes away; the work, in its own thread, then stops at its next forward pass."""
    import threading
    import time

    from gradcam.apps import web

    name = "py:test_web:Slow"
    monkeypatch.setattr(web, "SHELF", web.ModelShelf([name]))
    app = build_app()
    run = next(fn for fn in app.fns.values() if getattr(fn, "name", "") == "run")
    updates = run.fn(str(EXAMPLES / "coffee.jpg"), name, ["scorecam"], "features", "", 0.5, "jet", "crop",
                     "batch_size=1")  # fmt: skip
    next(updates)  # the work is under way (64 head passes of 200 ms each: 12.8 s)
    (worker,) = [t for t in threading.enumerate() if t.name == "gradcam-web-request"]
    start = time.monotonic()
    updates.close()  # what Gradio does when the page is closed
    worker.join(timeout=10)
    assert not worker.is_alive() and time.monotonic() - start < 3.0  # at its next forward pass


def test_sigterm_removes_the_scratch_folder(tmp_path):
    """#26 item 3: the scratch folder stayed behind when the server was stopped with SIGTERM."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = (
        "import sys; from gradcam.apps import web; from gradcam.apps.cli import main; "
        "print(web.scratch().root, flush=True); "
        f"sys.exit(main(['serve', '--port', '{port}']))"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    server = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env)  # fmt: skip
    root = Path(server.stdout.readline().strip())
    assert root.is_dir() and root.is_relative_to(tmp_path)
    deadline = time.monotonic() + 120
    while True:  # until it listens
        with socket.socket() as client:
            if client.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert server.poll() is None and time.monotonic() < deadline, server.communicate()
        time.sleep(0.2)
    server.send_signal(signal.SIGTERM)
    server.communicate(timeout=60)
    assert server.returncode == 143 and not root.exists()
