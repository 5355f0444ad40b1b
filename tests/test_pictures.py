"""The pictures users look at (issue 12): overlays at the photo's own resolution, the crop's margins, the frame."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from gradcam.apps.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def jpeg(folder: Path, name: str, size: tuple[int, int], orientation: int = 1) -> Path:
    path = folder / name
    photo = Image.open(EXAMPLES / "chelsea.jpg").convert("RGB").resize(size)
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    photo.save(path, quality=90, exif=exif.tobytes())
    return path


def explain(*argv: str) -> int:
    """``gradcam explain`` without the legend footer (these tests measure the overlay against the photo,
    pixel for pixel) unless ``argv`` asks for it."""
    return main(["explain", "--no-legend", *argv, "--workers", "0", "--quiet"])


@pytest.mark.parametrize("size", [(640, 512), (512, 600), (4032, 3024)])
def test_overlays_are_at_the_photo_own_resolution(tmp_path, size):
    """JPEGs at least twice the model's resize used to be drawn on the decoder's reduced image (320 x 256)."""
    photo = jpeg(tmp_path, "photo.jpg", size)
    out = tmp_path / "out"
    assert explain(str(photo), "--out", str(out)) == 0
    entry = json.loads((out / "results.json").read_text())["images"][0]
    assert entry["size"] == list(size) and entry["overlay_size"] == list(size)
    assert Image.open(entry["targets"][0]["files"]["overlay"]).size == size
    thumbnail = Image.open(entry["thumbnail"]).size  # a whole-factor reduction, 512 to 1023 px long
    assert 512 <= max(thumbnail) < 1024 if max(size) >= 1024 else thumbnail == size
    assert abs(thumbnail[0] / thumbnail[1] - size[0] / size[1]) < 0.02


def test_an_exif_rotated_photo_is_upright_at_its_own_size(tmp_path):
    photo = jpeg(tmp_path, "turned.jpg", (800, 600), orientation=6)  # stored landscape, shown portrait
    out = tmp_path / "out"
    assert explain(str(photo), "--out", str(out)) == 0
    entry = json.loads((out / "results.json").read_text())["images"][0]
    assert entry["size"] == [600, 800]
    assert Image.open(entry["targets"][0]["files"]["overlay"]).size == (600, 800)


def test_max_side_makes_smaller_overlays_and_keeps_the_real_size(tmp_path, capsys):
    photo = jpeg(tmp_path, "big.jpg", (4032, 3024))
    out = tmp_path / "out"
    assert explain(str(photo), "--out", str(out), "--max-side", "500") == 0
    entry = json.loads((out / "results.json").read_text())["images"][0]
    assert entry["size"] == [4032, 3024] and entry["overlay_size"] == [500, 375]
    assert Image.open(entry["targets"][0]["files"]["overlay"]).size == (500, 375)
    assert explain(str(photo), "--out", str(tmp_path / "o2"), "--max-side", "3") == 2
    assert "--max-side 3: give at least 16 pixels" in capsys.readouterr().err


def test_a_small_photo_is_drawn_enlarged_with_its_pixels_as_blocks(tmp_path):
    """A 32 x 32 photo (CIFAR's size) was drawn at 32 pixels: a smudge above a caption wrapped to two letters a
    line. It is drawn 320 wide, each pixel a 10 x 10 block (nothing the photo lacks is invented); the record
    keeps its own size and says the size drawn; ``--max-side`` still bounds it."""
    import numpy as np

    path = tmp_path / "cifar.png"
    Image.open(EXAMPLES / "chelsea.jpg").convert("RGB").resize((32, 32)).save(path)
    out = tmp_path / "out"
    assert explain(str(path), "--out", str(out), "--frame", "full", "--alpha", "0", "--format", "png") == 0
    entry = json.loads((out / "results.json").read_text())["images"][0]
    assert entry["size"] == [32, 32] and entry["overlay_size"] == [320, 320]
    drawn = np.asarray(Image.open(entry["targets"][0]["files"]["overlay"]).convert("RGB"))
    expected = np.asarray(Image.open(path).resize((320, 320), Image.Resampling.NEAREST))
    assert (drawn == expected).all()  # alpha 0: the photo alone, enlarged block by block
    assert explain(str(path), "--out", str(tmp_path / "legend"), "--legend") == 0
    legend = json.loads((tmp_path / "legend" / "results.json").read_text())["images"][0]
    assert Image.open(legend["targets"][0]["files"]["overlay"]).width == 320
    assert explain(str(path), "--out", str(tmp_path / "bounded"), "--max-side", "100") == 0
    bounded = json.loads((tmp_path / "bounded" / "results.json").read_text())["images"][0]
    assert bounded["overlay_size"] == [96, 96]  # the largest whole factor within --max-side


def test_enlarging_for_drawing_keeps_wide_photos_and_bounds_long_ones():
    from gradcam.io.images import Geometry
    from gradcam.render.viz import enlarged_for_drawing

    wide = Image.new("RGB", (640, 20))
    geometry = Geometry(original=(20, 640), resized=(224, 224), crop_origin=(0, 0), crop=(224, 224))
    assert enlarged_for_drawing(wide, geometry) == (wide, geometry)
    strip, placed = enlarged_for_drawing(Image.new("RGB", (10, 1000)), replace_original(geometry, (1000, 10)))
    assert strip.size == (40, 4000) and placed.original == (4000, 40)  # its longer side within 4,096


def replace_original(geometry, original):
    from dataclasses import replace

    return replace(geometry, original=original)


def test_a_small_photo_in_a_notebook_is_shown_in_blocks_not_as_a_speck():
    """The notebook view drew a 32 x 32 photo's overlay as a 32-pixel image; it shows what the files show."""
    import base64
    import io
    import re

    import gradcam

    photo = Image.open(EXAMPLES / "chelsea.jpg").convert("RGB").resize((32, 32))
    ex = gradcam.explain_image(photo)
    assert ex.overlay(0).size == (32, 32)  # the photo's own resolution, as documented
    assert ex.overlay(0, enlarge=True).size == (320, 320)
    shown = re.search(r'src="data:image/png;base64,([^"]+)"', ex._repr_html_())
    assert shown is not None and Image.open(io.BytesIO(base64.b64decode(shown.group(1)))).size == (320, 320)


def test_the_web_app_draws_on_the_photo_at_its_own_size(tmp_path):
    pytest.importorskip("gradio")
    from gradcam.apps.web import explain_photo

    photo = jpeg(tmp_path, "photo.jpg", (640, 512))
    result = explain_photo(str(photo), "efficientnet_lite0", ["gradcam"], None, "", 0.5, "jet", out_dir=tmp_path)
    assert result.overlays[0][0].size == (640, 512)


def decoded(path: Path):
    import numpy as np

    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_the_margins_the_crop_cut_away_are_dimmed_and_the_crop_framed(tmp_path):
    """They used to stay plain next to a flat tint: a hard-edged square."""
    import numpy as np

    out = tmp_path / "out"
    assert explain(str(EXAMPLES / "coffee.jpg"), "--out", str(out), "--format", "png") == 0
    entry = json.loads((out / "results.json").read_text())["images"][0]
    assert json.loads((out / "results.json").read_text())["frame"] == "crop"
    picture, photo = decoded(Path(entry["targets"][0]["files"]["overlay"])), decoded(EXAMPLES / "coffee.jpg")
    margin = (slice(100, 300), slice(10, 115))  # the 600 x 400 photo's left margin, outside the model's crop
    np.testing.assert_allclose(picture[margin], np.round(0.45 * photo[margin]), atol=1)
    assert (picture[150:250, 125] > 220).all()  # the frame: crop left 80 of 384 resized px = 125 of 600
    assert np.abs(picture[200, 300] - photo[200, 300]).max() > 20  # inside: tinted


@pytest.mark.parametrize("frame", ["full", "squash"])
def test_whole_photo_frames_cover_every_pixel(tmp_path, frame):
    import numpy as np

    out = tmp_path / "out"
    assert explain(str(EXAMPLES / "coffee.jpg"), "--out", str(out), "--frame", frame, "--save", "overlay,map") == 0
    manifest = json.loads((out / "results.json").read_text())
    entry = manifest["images"][0]
    assert manifest["frame"] == frame
    heat = np.load(entry["targets"][0]["files"]["map"])
    assert heat.shape == ((224, 352) if frame == "full" else (224, 224))  # 600 x 400 at 224 px, aspect kept
    picture, photo = decoded(Path(entry["targets"][0]["files"]["overlay"])), decoded(EXAMPLES / "coffee.jpg")
    assert (np.abs(picture - photo).max(axis=2) > 3).mean() > 0.95  # no dimmed margin, no frame: all tinted


def test_full_frame_on_a_fixed_size_model_falls_back_to_squash(tmp_path, capsys):
    out = tmp_path / "out"
    assert explain(str(EXAMPLES / "coffee.jpg"), "--model", "timm:vit_tiny_patch16_224", "--weights", "none",
                   "--out", str(out), "--frame", "full") == 0  # fmt: skip
    assert "takes only 224x224 inputs; the whole photo is resized to it" in capsys.readouterr().err
    assert json.loads((out / "results.json").read_text())["frame"] == "squash"


def test_an_overlay_drawn_from_the_8_bit_plane_equals_the_one_drawn_from_the_map():
    """The writer draws from heat_plane(maps) made for the whole batch; the web app from the float map."""
    import torch

    from gradcam.io.images import Geometry
    from gradcam.render.viz import heat_plane, overlay_image

    photo = Image.open(EXAMPLES / "coffee.jpg").convert("RGB")
    geometry = Geometry(original=(photo.height, photo.width), resized=(256, 384), crop_origin=(16, 80), crop=(224, 224))
    heat = torch.rand(7, 7)[None, None]
    heat = torch.nn.functional.interpolate(heat, size=(224, 224), mode="bilinear")[0, 0]
    from_map = overlay_image(photo, heat, geometry)
    from_plane = overlay_image(photo, heat_plane(heat), geometry)
    assert from_map.tobytes() == from_plane.tobytes()
    other_size = overlay_image(photo, heat_plane(heat)[::2, ::2].copy(), geometry)  # resized to the crop
    assert other_size.size == photo.size


def test_heat_tint_leaves_cold_pixels_as_they_are():
    import torch

    from gradcam.render.viz import overlay

    photo = torch.randint(0, 256, (3, 4, 4), dtype=torch.uint8)
    heat = torch.zeros(4, 4)
    heat[0, 0] = 1.0
    picture = overlay(photo, heat, alpha=0.6, tint="heat")
    assert torch.equal(picture[:, 1:], photo[:, 1:]) and not torch.equal(picture[:, 0, 0], photo[:, 0, 0])
    assert not torch.equal(overlay(photo, heat, alpha=0.6)[:, 1:], photo[:, 1:])  # flat tints everything


def test_the_readme_python_examples_run_offline_as_written(tmp_path, monkeypatch):
    """The README's snippets used an undefined `images` and downloaded ResNet-50 weights."""
    import re

    readme = (EXAMPLES.parent / "README.md").read_text()
    section = readme.split("## Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2
    (tmp_path / "examples").symlink_to(EXAMPLES)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), scope)
    assert scope["ex"].maps.shape == (2, 3, 224, 224)
    assert Image.open(tmp_path / "coffee-espresso.png").size == (600, 400)


def test_explain_image_three_lines_and_the_result_draws_itself(tmp_path):
    import numpy as np
    import torch
    import torchvision

    import gradcam

    ex = gradcam.explain_image(EXAMPLES / "coffee.jpg", targets="top-2")
    assert ex.names == ["espresso", "cup"] and ex.overlay(1).size == (600, 400)
    assert repr(ex).startswith("PhotoExplanation(efficientnet_lite0, gradcam at 'bn2', 600x400 photo")
    assert len(repr(ex.explanation)) < 200  # no whole tensors
    assert ex._repr_png_().startswith(b"\x89PNG") and "espresso" in ex._repr_html_()
    written = ex.save(tmp_path)
    assert sorted(p.name for p in written) == [  # named after the photo (#27: every save was "photo.*")
        "coffee.gradcam.967-espresso.npy", "coffee.gradcam.967-espresso.png", "coffee.gradcam.968-cup.npy",
        "coffee.gradcam.968-cup.png", "coffee.json",
    ]  # fmt: skip
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        ex.save(tmp_path)
    photo = torch.from_numpy(np.array(Image.open(EXAMPLES / "chelsea.jpg").convert("RGB"))).permute(2, 0, 1)
    torch.manual_seed(0)
    own = gradcam.explain_image(photo, torchvision.models.resnet18().eval(), frame="full")
    assert own.overlay().size == (451, 300) and own.layer == "layer4"
    with pytest.raises(TypeError, match="a path, a PIL image or a"):
        gradcam.explain_image(torch.zeros(5))


def test_layers_into_head_ends_without_a_traceback():
    import subprocess
    import sys

    command = f"{sys.executable} -m gradcam layers efficientnet_lite0 | head -1"
    done = subprocess.run(["bash", "-c", f"set -o pipefail; {command}"], capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("layer") and "Traceback" not in done.stderr and done.returncode == 0


def test_help_says_each_default_once(capsys):
    with pytest.raises(SystemExit):
        main(["explain", "-h"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: the pretrained weights)" in text and "pretrained weights) (default: None)" not in text


def test_the_summary_shows_whole_file_names_and_the_page(tmp_path, capsys):
    long = "a-photo-with-a-long-descriptive-name-from-a-camera-import-2026-11-26-0001"
    photo = jpeg(tmp_path, f"{long}.jpg", (320, 240))
    out = tmp_path / "out"
    assert main(["explain", str(photo), "--out", str(out), "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert f"{long}.gradcam." in printed and f"Open {out / 'index.html'}" in printed


def test_index_html_in_a_browser_rows_per_target_zoom_scale_and_a_movable_folder(tmp_path):
    """The page used to flow overlays, grids and guided pictures into two columns in no order, with
    captions that did not name the class, and linked the photos from outside the output folder."""
    import shutil

    from browser import headless_page

    out = tmp_path / "out"
    argv = [str(EXAMPLES), "--out", str(out), "--target", "top2", "--per-channel", "4", "--guided"]
    assert explain(*argv) == 0
    moved = tmp_path / "moved"
    shutil.move(out, moved)  # the page and everything it shows move together
    assert "../" not in (moved / "index.html").read_text().split('id="data">', 1)[1]
    with headless_page() as page:
        page.goto((moved / "index.html").as_uri())
        page.wait_for_selector(".card .target")
        shown = "[...document.images].filter(i => i.checkVisibility())"  # a folded channel grid loads when opened
        page.wait_for_function(f"{shown}.every(i => i.complete)")
        broken = page.evaluate(f"{shown}.filter(i => i.src && i.naturalWidth === 0).map(i => i.src)")
        assert broken == []
        captions = page.locator(".card[data-path$='coffee.jpg'] .target h3").all_inner_texts()
        assert captions[0].startswith("espresso (967): score") and "p = 0.95" in captions[0] and len(captions) == 2
        row = page.locator(".card[data-path$='coffee.jpg'] .target").first
        assert row.locator("figcaption").all_inner_texts()[:2] == [
            "gradcam for espresso (967)", "Guided Grad-CAM for espresso (967)",
        ]  # fmt: skip
        # #27: the overlay, the page's main picture, is larger than the photo's thumbnail; the channel grid folded
        card = page.locator(".card[data-path$='coffee.jpg']")
        overlay_width = row.locator("img").first.bounding_box()["width"]
        assert overlay_width > card.locator("figure.photo img").bounding_box()["width"]
        grid = row.locator("details.grid")
        assert grid.get_attribute("open") is None and not grid.locator("img").is_visible()
        grid.locator("summary").click()
        grid.locator("img").wait_for(state="visible", timeout=10_000)
        opened = "[...document.querySelectorAll('details.grid[open] img')]"
        page.wait_for_function(f"{opened}.every(i => i.naturalWidth > 0)")
        assert grid.locator("figcaption").inner_text() == "the feature maps adding up to the map for espresso (967)"
        assert "heat: low" in page.locator(".scale").inner_text()
        row.locator("img").first.click()
        assert page.locator("dialog#zoom").get_attribute("open") is not None
        assert page.locator("dialog#zoom p").inner_text() == "gradcam for espresso (967)"
        shot = page.screenshot()
    import io

    import numpy as np

    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("L"), dtype=np.float32)
    assert pixels.std() > 20  # a page with pictures on it, not a blank one


def test_legend_footer_names_the_target_and_the_scale(tmp_path):
    out = tmp_path / "out"
    assert explain(str(EXAMPLES / "chelsea.jpg"), "--out", str(out), "--legend") == 0
    entry = json.loads((out / "results.json").read_text())["images"][0]
    picture = Image.open(entry["targets"][0]["files"]["overlay"])
    assert picture.width == 451 and picture.height > 300  # the photo, then the footer


def test_report_html_in_a_browser(tmp_path):
    import io

    import numpy as np

    from browser import headless_page

    out = tmp_path / "eval"
    argv = ["evaluate", str(EXAMPLES / "chelsea.jpg"), "--methods", "gradcam,xgradcam,layercam", "--steps", "2"]
    assert main([*argv, "--out", str(out)]) == 0
    with headless_page() as page:
        page.goto((out / "report.html").as_uri())
        page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
        assert page.locator("td b").count() >= 1  # the best value of each column stands out
        assert "gradcam @ bn2 = xgradcam @ bn2" in page.locator("nav").inner_text()
        shot = page.screenshot(full_page=True)
    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("L"), dtype=np.float32)
    assert pixels.std() > 20


def test_the_channel_grid_leaves_few_empty_cells_and_says_which_scale_is_shared():
    """#27: 16 channels and the combined tile were 5 x 4 with three empty cells, under a note saying "one
    colour scale for every tile" although the combined tile is scaled on its own."""
    import torch

    from gradcam.render.viz import channel_grid, grid_columns

    assert [grid_columns(n) for n in (3, 5, 9, 17, 33)] == [2, 3, 3, 6, 7]
    photo = torch.full((3, 32, 32), 128, dtype=torch.uint8)
    grid = channel_grid(photo, torch.rand(16, 4, 4), list(range(16)), [1.0] * 16, torch.rand(32, 32), 16.0, tile=64)
    assert grid.width == 6 * 64  # 6 x 3: one empty cell
    import numpy as np

    pixels = np.asarray(grid)
    last_cell = pixels[2 * (pixels.shape[0] - 40) // 3 + 20 : pixels.shape[0] - 40, 5 * 64 + 8 : 6 * 64 - 8]
    assert (last_cell == 255).all()  # the one empty cell, white


def test_maps_from_a_coarse_grid_are_drawn_without_creases():
    """#27: bilinear upsampling from 7 x 7 is creased along the cells' edges (diamonds on a 4,000-pixel
    overlay). The drawn map is smoothed by half a cell; its maximum and the stored map stay as they were."""
    import torch
    import torch.nn.functional as F

    from gradcam.render.viz import smooth_for_drawing

    grid = torch.zeros(1, 1, 7, 7)
    grid[0, 0, 3, 3], grid[0, 0, 2, 4] = 1.0, 0.6
    maps = F.interpolate(grid, size=(224, 224), mode="bilinear", align_corners=False)
    maps = maps / maps.amax()
    drawn = smooth_for_drawing(maps, (7, 7))

    def crease(m):  # the largest second difference along the rows: a kink where bilinear changes slope
        return (m[..., 2:] - 2 * m[..., 1:-1] + m[..., :-2]).abs().amax()

    assert crease(drawn) < crease(maps) / 5
    assert float(drawn.amax()) == pytest.approx(1.0)
    peak = divmod(int(drawn[0, 0].argmax()), 224)
    assert abs(peak[0] - 112) <= 16 and abs(peak[1] - 112) <= 16  # still on the hottest cell (32 px a cell)
    fine = torch.rand(1, 2, 16, 16)
    assert torch.equal(smooth_for_drawing(fine, (16, 16)), fine)  # a map at its grid's own size: as it is
