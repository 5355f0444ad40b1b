"""Video files in and out, one frame at a time (optional extra: ``pip install gradcam[video]``, PyAV).

Frames are decoded and encoded as a stream, so a long video never sits in memory: :func:`read_frames`
yields RGB PIL images, :class:`VideoWriter` encodes H.264 (``libx264``; MPEG-4 part 2 where a build lacks
it) at the source's frame rate.

Example:
    >>> info = video_info("clip.mp4")                                        # doctest: +SKIP
    >>> for index, frame in read_frames("clip.mp4"): ...
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from PIL import Image

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


class VideoReadError(ValueError):
    """A video that cannot be read: one line naming the file."""


def _av() -> Any:
    try:
        import av
    except ImportError as error:
        message = f"videos need the video extra: pip install 'gradcam[video]' ({error.name} is missing)"
        raise VideoReadError(message) from None
    return av


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class VideoInfo:
    """A video's frame rate, its frame count (the container's, or estimated from the duration) and its
    frames' (width, height)."""

    fps: float
    frames: int
    size: tuple[int, int]


def video_info(path: str | Path) -> VideoInfo:
    av = _av()
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 25)
            frames = int(stream.frames or 0)
            if not frames and stream.duration is not None and stream.time_base is not None:
                frames = int(float(stream.duration * stream.time_base) * fps)
            return VideoInfo(fps, frames, (int(stream.codec_context.width), int(stream.codec_context.height)))
    except (av.error.FFmpegError, IndexError, OSError) as error:
        raise VideoReadError(f"{path}: not a readable video ({type(error).__name__}: {error})") from None


def read_frames(path: str | Path, every: int = 1) -> Iterator[tuple[int, Image.Image]]:
    """``(index, RGB frame)`` for every ``every``-th frame, decoded one at a time."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for index, frame in enumerate(container.decode(stream)):
                if index % every == 0:
                    yield index, frame.to_image().convert("RGB")
    except av.error.FFmpegError as error:
        raise VideoReadError(f"{path}: cannot decode ({type(error).__name__}: {error})") from None


class VideoWriter:
    """Encodes RGB frames of one (width, height) into a video file, streaming; odd sizes are cropped by a
    pixel to the even size H.264 needs. Use as a context manager."""

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]) -> None:
        av = _av()
        self.path = Path(path)
        self.size = (size[0] - size[0] % 2, size[1] - size[1] % 2)
        self.container = av.open(str(self.path), mode="w")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        rate = Fraction(fps).limit_denominator(1001)
        self.stream = self.container.add_stream(codec, rate=rate)
        self.stream.width, self.stream.height = self.size
        self.stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            self.stream.options = {"crf": "20", "preset": "veryfast"}
        self.frames = 0

    def write(self, picture: Image.Image) -> None:
        av = _av()
        if picture.size != self.size:
            picture = picture.crop((0, 0, *self.size))
        for packet in self.stream.encode(av.VideoFrame.from_image(picture)):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
