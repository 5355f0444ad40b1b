"""Videos from the command line (issue 14): a generated clip with a moving square, explained by a video
classifier (r3d_18, random weights) and frame by frame by an image model; the overlay video's frame count
and size, the map's peak where the square is, the contact sheet, the record; a long video streams."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from manifest_check import validate

av = pytest.importorskip("av", reason="the video extra is not installed (pip install 'gradcam[video]')")

from gradcam.apps.cli import main  # noqa: E402
from gradcam.io.video import VideoWriter, read_frames, video_info  # noqa: E402

SIZE = (160, 120)


def square_at(frame: int, frames: int) -> tuple[int, int, int, int]:
    """The moving square's box: left to right across the frame."""
    left = 10 + (SIZE[0] - 60) * frame // max(1, frames - 1)
    return left, 40, left + 40, 80


def moving_square(path: Path, frames: int = 20, fps: float = 10.0) -> Path:
    with VideoWriter(path, fps, SIZE) as writer:
        for i in range(frames):
            picture = Image.new("RGB", SIZE, (40, 40, 40))
            ImageDraw.Draw(picture).rectangle(square_at(i, frames), fill=(250, 250, 250))
            writer.write(picture)
    return path


class Brightness(torch.nn.Module):
    """An image 'model' whose class 1 score is the mean of a 1x1 conv's ReLU: its Grad-CAM map is the
    bright square itself, so the map's peak must follow the square."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
        with torch.no_grad():
            self.features[0].weight.fill_(0.0)
            self.features[0].weight[:, :, 1, 1] = 1.0
            self.features[0].bias.fill_(0.0)
        self.head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))
        with torch.no_grad():
            self.head[2].weight.copy_(torch.tensor([[-1.0] * 4, [1.0] * 4]))
            self.head[2].bias.fill_(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def test_a_video_round_trip_keeps_its_frames_and_size(tmp_path):
    path = moving_square(tmp_path / "square.mp4")
    info = video_info(path)
    assert info.size == SIZE and info.frames == 20 and abs(info.fps - 10.0) < 0.01
    frames = list(read_frames(path, every=2))
    assert [i for i, _ in frames] == list(range(0, 20, 2)) and frames[0][1].size == SIZE


def test_a_video_classifier_explains_a_clip_into_a_video_and_a_contact_sheet(tmp_path):
    path = moving_square(tmp_path / "square.mp4", frames=20)
    out = tmp_path / "out"
    argv = ["explain", str(path), "--model", "r3d_18", "--weights", "none", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    manifest = validate(out / "results.json")
    (record,) = manifest["images"]
    assert record["frames"] == 20 and record["layer"] == "layer4" and record["fps"] == 10.0
    files = record["targets"][0]["files"]
    written = video_info(files["video"])
    assert written.frames == 20 and written.size == (320, 240)  # two clips of 16, the second padded and cut;
    sheet = Image.open(files["contact_sheet"])  # a 160 px video is drawn 2x, its captions legible
    assert sheet.width == 4 * 320 and sheet.height > 240 and record["overlay_size"] == [320, 240]
    assert "<video" in (out / "index.html").read_text() or "video" in (out / "index.html").read_text()


def test_frame_by_frame_the_map_follows_the_moving_square(tmp_path):
    from gradcam.io.models import LoadedModel, Preprocessing
    from gradcam.pipeline.options import RunOptions
    from gradcam.pipeline.video import explain_video

    path = moving_square(tmp_path / "square.mp4", frames=12)
    bundle = LoadedModel("brightness", Brightness().eval(), Preprocessing(resize=120, crop=(120, 160), squash=True))
    options = RunOptions(out=tmp_path / "out", layer="features", target="1", batch_size=5)
    record = explain_video(bundle, path, "square", options).to_json()
    assert record["frames"] == 12 and record["targets"][0]["index"] == 1
    overlays = [np.asarray(frame, dtype=np.int16) for _, frame in read_frames(record["targets"][0]["files"]["video"])]
    assert len(overlays) == 12
    for i, drawn in enumerate(overlays):
        left, top, right, bottom = (2 * v for v in square_at(i, 12))  # the 160 px video is drawn 2x
        red = drawn[..., 0] - drawn[..., 2]  # jet: hot is red, cold is blue
        inside = red[top + 16 : bottom - 16, left + 16 : right - 16].mean()
        beyond = min(2 * SIZE[0] - 1, right + 40)
        outside = np.concatenate([red[:, : max(1, left - 40)].ravel(), red[:, beyond:].ravel()])
        assert inside > outside.mean() + 40, i


def test_options_written_for_photos_are_refused_for_videos_in_one_line(tmp_path, capsys):
    path = moving_square(tmp_path / "square.mp4", frames=4)
    # (--engine ray and one class by name are honoured for videos since 0.9: tests/test_options_matrix.py)
    for extra in (["--resume"], ["--per-channel", "4"], ["--target", "tabby,tiger cat"], ["--target", "top3"]):
        assert main(["explain", str(path), "--out", str(tmp_path / "out"), "--quiet", *extra]) == 2
        assert "gradcam: error:" in capsys.readouterr().err
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 64)).save(photo)
    assert main(["explain", str(path), str(photo), "--out", str(tmp_path / "o2")]) == 2
    assert "separate" in capsys.readouterr().err


def test_memory_stays_flat_over_a_long_video(tmp_path):
    """Only one batch of frames is held: 400 frames peak no higher than 40 (within 10%)."""
    import resource
    import subprocess
    import sys

    peaks = []
    for frames in (40, 400):
        path = moving_square(tmp_path / f"v{frames}.mp4", frames=frames, fps=25)
        out = tmp_path / f"out{frames}"
        code = (
            "import resource, sys; from gradcam.apps.cli import main; "
            f"code = main(['explain', {str(path)!r}, '--out', {str(out)!r}, '--quiet', '--batch-size', '8']); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-500:]
        peaks.append(int(result.stdout.split()[-1]))
    assert peaks[1] <= 1.1 * peaks[0], peaks
    del resource


class WideHead(torch.nn.Module):
    """A frame model with 200,000 classes: its logits per frame are 0.8 MB, so keeping every frame's (as the
    video record's mean once did) grows memory with the video's length (#26 item 6)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=4, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 200_000))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def test_memory_stays_flat_with_a_wide_head_over_a_long_video(tmp_path):
    import subprocess
    import sys

    peaks = []
    tests = str(Path(__file__).resolve().parent)
    for frames in (40, 600):
        path = moving_square(tmp_path / f"w{frames}.mp4", frames=frames, fps=25)
        out = tmp_path / f"wide{frames}"
        code = (
            f"import resource, sys; sys.path.insert(0, {tests!r}); from gradcam.apps.cli import main; "
            f"code = main(['explain', {str(path)!r}, '--model', 'py:test_video:WideHead', '--target', '7', "
            f"'--out', {str(out)!r}, '--quiet', '--batch-size', '8']); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-500:]
        peaks.append(int(result.stdout.split()[-1]))
    assert peaks[1] - peaks[0] < 150 * 1024, peaks  # KB: 600 frames' logits alone would be 480 MB


def test_two_videos_of_one_name_in_two_folders_keep_both_sheets(tmp_path):
    """#26 item 6: a/clip.mp4 and b/clip.mp4 wrote one contact sheet (the first silently replaced)."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        moving_square(tmp_path / folder / "clip.mp4", frames=4)
    out = tmp_path / "out"
    argv = ["explain", str(tmp_path / "a" / "clip.mp4"), str(tmp_path / "b" / "clip.mp4"), "--model",
            "py:test_video:Brightness", "--target", "1", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    sheets = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.contact-sheet.png"))
    assert sheets == ["a/clip.gradcam.contact-sheet.png", "b/clip.gradcam.contact-sheet.png"]


def test_a_video_over_the_megapixel_limit_is_one_line_from_its_header(tmp_path, capsys):
    """#26 item 6: a 16000 x 16000 mp4 (752 KB) ran out of memory decoding its frames; the frame size is read
    from the container and bounded like a photo's (here a small video under a smaller limit)."""
    path = moving_square(tmp_path / "big.mp4", frames=4)
    out = tmp_path / "out"
    argv = ["explain", str(path), "--model", "py:test_video:Brightness", "--target", "1", "--out", str(out),
            "--quiet", "--max-megapixels", "0.01"]  # fmt: skip
    assert main(argv) == 1
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "big.mp4" in line]
    assert "megapixels" in line and "Traceback" not in line
    assert validate(out / "results.json")["images"][0]["status"] == "error"


def test_a_video_without_a_frame_count_still_shows_progress(tmp_path):
    """#26 item 6: an .mkv without a frame count crashed the progress bar (it worked with --quiet)."""
    import av as pyav

    path = tmp_path / "clip.mkv"
    with pyav.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(6):
            frame = pyav.VideoFrame.from_image(Image.new("RGB", (160, 120), (40 * i, 40, 40)))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    out = tmp_path / "out"
    assert main(["explain", str(path), "--model", "py:test_video:Brightness", "--target", "1", "--out", str(out)]) == 0
    assert validate(out / "results.json")["images"][0]["frames"] == 6


class Side(torch.nn.Module):
    """Class 0: how bright the left half is; class 1: the right half. The square moving left to right
    changes the top class half way."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 1, 1), torch.nn.ReLU())
        with torch.no_grad():
            self.features[0].weight.fill_(1 / 3)
            self.features[0].bias.fill_(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.features(x)[:, 0]
        half = a.shape[-1] // 2
        return torch.stack([a[..., :half].mean(dim=(1, 2)), a[..., half:].mean(dim=(1, 2))], dim=1) * 10


def test_without_a_target_each_frame_is_explained_for_its_own_top_class(tmp_path):
    """#27 item 5: a pan from one object to another was titled with the first frame's class throughout.
    Each frame's map is now of its own top class, and the mp4 and the contact sheet say which, with its
    probability."""
    from gradcam.io.models import LoadedModel, Preprocessing
    from gradcam.pipeline.options import RunOptions
    from gradcam.pipeline.video import explain_video

    path = moving_square(tmp_path / "square.mp4", frames=12)
    bundle = LoadedModel("side", Side().eval(), Preprocessing(resize=120, crop=(120, 160), squash=True),
                         labels=["left", "right"])  # fmt: skip
    options = RunOptions(out=tmp_path / "out", layer="features", batch_size=5)
    record = explain_video(bundle, path, "square", options).to_json()
    target = record["targets"][0]
    assert target.get("index") is None and target["label"].startswith("the top class of each frame: ")
    assert "left (" in target["label"] and "right (" in target["label"]
    assert Path(target["files"]["video"]).name == "square.gradcam.top-class.mp4"
    frames = [np.asarray(frame, dtype=np.int16) for _, frame in read_frames(target["files"]["video"])]
    for i in (0, 11):  # the square on the left, then on the right: the map follows the class that wins
        left, top, right, bottom = (2 * v for v in square_at(i, 12))  # the 160 px video is drawn 2x
        red = frames[i][..., 0] - frames[i][..., 2]
        assert red[top + 16 : bottom - 16, left + 16 : right - 16].mean() > red[120:, :].mean() + 40, i
        corner = frames[i][2:8, 2:40]  # the caption tile: dark, with light letters
        assert corner.mean() < 120 and corner.max() > 180
    sheet = Image.open(target["files"]["contact_sheet"])
    assert sheet.width == 4 * 320
    with_target = explain_video(bundle, path, "fixed", RunOptions(out=tmp_path / "out", layer="features",
                                                                  batch_size=5, target="left")).to_json()  # fmt: skip
    assert with_target["targets"][0]["index"] == 0 and with_target["targets"][0]["label"] == "left"
