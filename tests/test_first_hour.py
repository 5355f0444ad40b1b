"""The first hour of a new user (#27 item 14, in part): messages and help that a newcomer reads first."""

from __future__ import annotations

from pathlib import Path

import pytest

import gradcam
from gradcam.apps.cli import build_parser, main
from gradcam.targets import class_index

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_a_method_typo_is_one_line_with_the_close_names(tmp_path, capsys):
    assert main(["explain", str(EXAMPLES / "coffee.jpg"), "--method", "gradcm", "--out", str(tmp_path / "o")]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("gradcam: error: --method gradcm:") and "gradcam" in line and "usage:" not in captured.err


def test_a_missing_file_is_one_line(tmp_path, capsys):
    assert main(["explain", str(tmp_path / "nope.jpg"), "--out", str(tmp_path / "o")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"gradcam: error: {tmp_path / 'nope.jpg'}: no such file or folder; no images found"


def test_help_says_no_default_where_none_applies(capsys):
    with pytest.raises(SystemExit):
        main(["explain", "-h"])
    text = capsys.readouterr().out
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "(default: gradcam)" in text.replace("\n", " ").replace("  ", " ") or "default: gradcam" in text


def test_every_command_has_a_description_and_help_never_breaks_a_word(capsys):
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    for name, sub in commands.choices.items():
        assert sub.description, name
        with pytest.raises(SystemExit):
            main([name, "-h"])
        text = capsys.readouterr().out
        assert "gradcam-e\n" not in text and "-e lementwise" not in text.replace("\n", " "), name


@pytest.mark.parametrize("typed, expected", [("cat", {"tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}),
                                             ("tigr cat", {"tiger cat"})])  # fmt: skip
def test_a_class_name_typo_suggests_the_classes_that_contain_it(typed, expected):
    labels = gradcam.imagenet_labels()
    with pytest.raises(ValueError) as unknown:
        class_index(typed, labels)
    message = str(unknown.value)
    assert all(repr(name) in message for name in expected), message
    assert "crate" not in message and "castle" not in message


def test_every_python_snippet_of_the_readme_runs_as_written(tmp_path, monkeypatch):
    """#27 item 13: `gradcam.models.Preprocessing` in the README raised AttributeError; each ```python block
    now runs as written (in a folder with the examples beside it, as in a checkout)."""
    import re

    readme = (EXAMPLES.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert len(blocks) >= 2
    (tmp_path / "examples").symlink_to(EXAMPLES)
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})  # noqa: S102 (our own README)
    assert (tmp_path / "coffee-espresso.png").exists()
    spec = gradcam.io.models.Preprocessing(resize=256, crop=(224, 224))  # the README's own words
    assert spec.crop == (224, 224)


def test_explain_image_takes_several_classes_of_one_photo_and_saves_by_its_name(tmp_path):
    """#27 item 13: targets=["tiger cat", "tabby"] or [282, 281] failed ("2 targets for a batch of 1"), and
    ex.save named every file photo.* with the model's name as the photo's path."""
    for targets in (["tiger cat", "tabby"], [282, 281], "tiger cat,tabby"):
        ex = gradcam.explain_image(str(EXAMPLES / "chelsea.jpg"), targets=targets)
        assert ex.names == ["tiger cat", "tabby"]
    written = ex.save(tmp_path) + gradcam.explain_image(str(EXAMPLES / "coffee.jpg")).save(tmp_path)
    assert {p.name for p in written} >= {"chelsea.json", "coffee.json", "chelsea.gradcam.281-tabby.png"}
    import json

    assert json.loads((tmp_path / "chelsea.json").read_text())["images"][0]["path"].endswith("chelsea.jpg")
    assert len(repr(gradcam.load_model())) < 300


def test_explain_help_groups_its_options(capsys):
    """#27 item 14: `explain -h` had 43 options in one flat list."""
    with pytest.raises(SystemExit):
        main(["explain", "-h"])
    text = capsys.readouterr().out
    headings = ["inputs:", "model:", "method:", "targets:", "outputs:", "videos:", "running:"]
    positions = [text.index(f"\n{heading}\n") for heading in headings]
    assert positions == sorted(positions)
    sections = dict(
        zip(headings, [text[a:b] for a, b in zip(positions, [*positions[1:], len(text)], strict=True)], strict=True)
    )
    assert "--counterfactual" in sections["method:"] and "--every" in sections["videos:"]
    assert "--kind" in sections["inputs:"] and "--engine" in sections["running:"] and "--out " in sections["outputs:"]


def test_gradcam_help_imports_no_torch():
    """#27 item 14: `gradcam --help` took 4-14 s (every command and torch imported to list seven lines); now
    it imports neither (a fresh interpreter: this one has torch already). `explain -h` still lists all."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom gradcam.apps.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "print('torch' in sys.modules, 'gradcam.explain' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == "False False" and any("explain" in line and "photos" in line for line in lines)
    import gradcam

    assert callable(gradcam.explain) and callable(gradcam.methods)  # the public names, not the submodules


def test_random_weights_are_said_on_the_console_the_page_and_the_pictures(tmp_path, capsys):
    """#27 item 6: `--weights none` drew "gradcam for riding unicycle" with no sign the model was untrained."""
    import numpy as np
    from PIL import Image

    from gradcam.apps.cli import main

    code = main(["explain", str(EXAMPLES / "coffee.jpg"), "--weights", "none", "--out", str(tmp_path), "--quiet"])
    assert code == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "random weights" in line]
    assert len(warned) == 1 and "untrained network" in warned[0]
    page = (tmp_path / "index.html").read_text()
    assert 'id="untrained"' in page and "Untrained model." in page
    trained = tmp_path / "trained"
    assert main(["explain", str(EXAMPLES / "coffee.jpg"), "--out", str(trained), "--quiet"]) == 0
    assert 'id="untrained"' not in (trained / "index.html").read_text()
    assert "random weights" not in capsys.readouterr().err

    def corner(folder):  # the bottom-left corner of the overlay, where the red "untrained model" tile sits
        overlay = next(p for p in folder.glob("coffee.gradcam.*.jpg"))
        pixels = np.asarray(Image.open(overlay).convert("RGB"), dtype=np.float32)
        photo_height = Image.open(EXAMPLES / "coffee.jpg").height  # the legend is below the photo
        return pixels[photo_height - 8 : photo_height, :40].mean(axis=(0, 1))

    red, green, blue = corner(tmp_path)
    assert red > 130 and green < 80 and blue < 80
    assert not (corner(trained)[0] > 130 and corner(trained)[1] < 80)


def test_an_empty_counterfactual_map_is_said_not_drawn_as_a_flat_tint(tmp_path):
    """#27 item 1: the README's `--target "tiger cat" --counterfactual` on the cat gave an all-zero map drawn as
    a flat blue overlay with no message, and nothing recorded how strong any map was."""
    import json

    import numpy as np
    from PIL import Image

    examples = Path(gradcam.__file__).parent / "examples"
    out = tmp_path / "out"
    code = main(["explain", str(examples / "chelsea.jpg"), str(examples / "coffee.jpg"), "--target", "tiger cat",
                 "--counterfactual", "--out", str(out), "--quiet", "--format", "png"])  # fmt: skip
    assert code == 0
    manifest = json.loads((out / "results.json").read_text())
    peaks = {Path(im["path"]).stem: im["targets"][0]["raw_max"] for im in manifest["images"]}
    assert peaks["chelsea"] == 0 and peaks["coffee"] > 0
    overlay = np.asarray(Image.open(out / "chelsea.gradcam.against-282-tiger_cat.png").convert("RGB")).astype(float)
    photo = np.asarray(Image.open(examples / "chelsea.jpg").convert("RGB")).astype(float)
    top, left, bottom, right = 60, 160, 200, 300  # inside the model's view, away from its frame line
    assert abs(overlay[top:bottom, left:right] - photo[top:bottom, left:right]).mean() < 4  # the photo, untinted
    with_legend = tmp_path / "legend"
    assert main(["explain", str(examples / "chelsea.jpg"), "--target", "tiger cat", "--counterfactual", "--legend",
                 "--out", str(with_legend), "--quiet", "--format", "png"]) == 0  # fmt: skip
    pictured = np.asarray(Image.open(with_legend / "chelsea.gradcam.against-282-tiger_cat.png").convert("RGB"))
    assert pictured.shape[0] > photo.shape[0]  # the footer says it (its text is checked in the legend test)


def test_the_legend_says_an_empty_map_and_the_raw_maximum():
    import torch

    from gradcam.render.viz import with_legend

    picture = torch.full((3, 100, 300), 128, dtype=torch.uint8)
    empty = with_legend(picture, "gradcam: against tiger cat (282)", empty="empty map: no evidence against tiger cat")
    scaled = with_legend(picture, "gradcam: tabby (281)", peak=0.0021)
    assert empty.shape[1] > 100 and scaled.shape[1] > 100
    footer_empty, footer_scaled = empty[:, 100:], scaled[:, 100:]
    reddish = (footer_empty[0].int() - footer_empty[2].int() > 60).sum()
    assert reddish > 20  # the sentence, in red, instead of the colour bar
    bar = (footer_scaled[2].int() - footer_scaled[0].int() > 60).sum()  # the scale's blue end
    assert bar > 20 and (footer_empty[2].int() - footer_empty[0].int() > 60).sum() == 0


def test_a_shared_scale_draws_weak_evidence_weak(tmp_path):
    """#27 item 1: every map was stretched to its own maximum, so evidence ten times weaker was drawn as red as
    the strongest. `--scale shared` draws a photo's maps on its strongest map's scale."""
    import json

    import numpy as np
    from PIL import Image

    coffee = Path(gradcam.__file__).parent / "examples" / "coffee.jpg"

    def red_share(out: Path, name: str) -> float:
        pixels = np.asarray(Image.open(out / name).convert("RGB")).astype(int)
        return float(((pixels[..., 0] > 180) & (pixels[..., 2] < 90)).mean())

    runs = {}
    for scale in ("own", "shared"):
        out = tmp_path / scale
        assert main(["explain", str(coffee), "--target", "espresso,tiger cat", "--scale", scale, "--out", str(out),
                     "--quiet", "--format", "png"]) == 0  # fmt: skip
        runs[scale] = out
    manifest = json.loads((runs["shared"] / "results.json").read_text())
    assert manifest["options"]["scale"] == "shared"
    strong, weak = (t["raw_max"] for t in manifest["images"][0]["targets"])
    assert strong > 5 * weak > 0
    weak_file, strong_file = "coffee.gradcam.282-tiger_cat.png", "coffee.gradcam.967-espresso.png"
    assert red_share(runs["own"], weak_file) > 0.005  # stretched: as red as a strong map
    assert red_share(runs["shared"], weak_file) < 0.1 * red_share(runs["own"], weak_file)
    assert red_share(runs["shared"], strong_file) == pytest.approx(red_share(runs["own"], strong_file), abs=1e-3)


def test_a_legend_fits_any_width():
    """#27 item 3: on a narrow photo the legend was cut off ("gradcam: Egyptian ca"); it now wraps."""
    import torch

    from gradcam.render.viz import _wrapped, with_legend

    assert _wrapped("aa bb cc", 5, len) == ["aa bb", "cc"]
    assert _wrapped("abcdefgh", 3, len) == ["abc", "def", "gh"]
    title = "gradcam: Egyptian cat (285), logit 8.03, p = 0.42"
    heights = []
    for width in (120, 200, 451, 900):
        out = with_legend(torch.full((3, 50, width), 90, dtype=torch.uint8), title, peak=8.03)
        footer = out[:, 50:]
        assert bool((footer[:, :, -4:] == 255).all()), width  # nothing runs into the right edge
        heights.append(footer.shape[1])
    assert heights[0] > heights[2]  # the narrow one wrapped onto more lines
