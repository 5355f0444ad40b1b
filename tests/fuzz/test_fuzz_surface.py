"""Properties for the surface added since the first fuzz suite (#26): label files, method options, array
files, image arrays, model folders, videos and the web app's file uploads. Each input ends in a result or
one line naming what is wrong; no other exception escapes, and nothing grows past the work's bounds."""

from __future__ import annotations

import io
import json
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradcam
from gradcam.io.arrays import ArrayReadError, read_array
from gradcam.io.image_arrays import read_image_array
from gradcam.io.models import ModelLoadError, read_labels
from gradcam.pipeline.method_options import method_with_options
from gradcam.pipeline.options import UsageError

from .conftest import scaled

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
LABEL_FILES = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    st.dictionaries(st.integers(-5, 10**13).map(str), st.text(max_size=5), max_size=4).map(
        lambda value: json.dumps(value).encode()
    ),
    st.integers(1, 200_000).map(lambda depth: ("[" * depth + "]" * depth).encode()),
)


def _one_line(error: BaseException) -> None:
    assert str(error).strip() and "\n" not in str(error).strip(), repr(error)


@given(content=LABEL_FILES, suffix=st.sampled_from([".txt", ".json"]))
def test_label_files_give_names_or_one_line(content, suffix):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"labels{suffix}"
        path.write_bytes(content)
        try:
            names = read_labels(path)
        except ModelLoadError as error:
            _one_line(error)
        else:
            assert 0 < len(names) <= 1_000_000 and all(isinstance(name, str) for name in names)


OPTION_TEXT = st.one_of(
    st.sampled_from(["0", "-1", "1", "8", "nan", "inf", "-inf", "1e9", "2.5", "true", "none", "abc", "1,2", "1,x", ""]),
    st.text(max_size=12),
)


@given(
    method=st.sampled_from(gradcam.methods()),
    key=st.one_of(st.sampled_from(["samples", "batch_size", "k", "std", "seed", "gamma", "ranks", "depth",
                                   "top_channels", "kernel", "num_scales", "pool", "alpha"]), st.text(max_size=8)),
    text=OPTION_TEXT,
)  # fmt: skip
def test_method_options_build_a_method_or_say_why_in_one_line(method, key, text):
    try:
        built = method_with_options(method, [(key, text)])
    except UsageError as error:
        _one_line(error)
    else:
        assert isinstance(built, gradcam.CAMMethod)


def _npy(shape: tuple[int, ...], descr: str, body: bytes) -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": shape})
    return header.getvalue() + body


ARRAY_FILES = st.one_of(
    st.binary(max_size=300),
    st.builds(
        _npy,
        st.lists(st.integers(0, 5000), max_size=5).map(tuple),
        st.sampled_from(["<f4", "<f8", "|u1", "<u2", "<i8", "|b1", "|O", "<c8", "<U3"]),
        st.binary(max_size=400),
    ),
    st.builds(
        lambda shape, seed: _saved(np.random.default_rng(seed).normal(size=shape).astype(np.float32)),
        st.lists(st.integers(1, 9), min_size=1, max_size=5).map(tuple),
        st.integers(0, 100),
    ),
)


def _saved(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@given(content=ARRAY_FILES, as_image=st.booleans())
def test_array_files_give_values_or_one_line(content, as_image):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.npy"
        path.write_bytes(content)
        try:
            item = read_image_array(path, max_megapixels=1) if as_image else read_array(path, max_elements=4_000_000)
        except ArrayReadError as error:
            _one_line(error)
        else:
            assert item.values.dtype.is_floating_point and item.values.numel() <= 4_000_000
            assert bool(item.values.isfinite().all()) or not as_image


@given(content=st.one_of(st.binary(max_size=300), st.just(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)))
def test_video_files_give_their_info_or_one_line(content):
    pytest.importorskip("av")
    from gradcam.io.video import VideoReadError, video_info

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.mp4"
        path.write_bytes(content)
        try:
            info = video_info(path)
        except VideoReadError as error:
            _one_line(error)
        else:
            assert info.fps > 0 and info.frames >= 0


@given(config=JSON_VALUES, auto_map=st.booleans())
@settings(max_examples=scaled(20))
def test_model_folders_load_or_say_why_in_one_line_and_never_run_their_code(config, auto_map):
    pytest.importorskip("transformers")
    from gradcam.io.models import load_model

    with tempfile.TemporaryDirectory() as folder:
        marker = Path(folder) / "ran"
        data = config if isinstance(config, dict) else {"value": config}
        if auto_map:
            data = {**data, "auto_map": {"AutoConfig": "evil.Config"}}
        (Path(folder) / "config.json").write_text(json.dumps(data))
        (Path(folder) / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
        try:
            load_model(f"hf:{folder}")
        except ModelLoadError as error:
            _one_line(error)
        assert not marker.exists()


UPLOAD_NAMES = st.sampled_from(["a.npy", "b.nii.gz", "c.mp4", "d.tif", "e.txt", "f.jpg", "g.tiff", "h"])


@given(name=UPLOAD_NAMES, content=st.one_of(st.binary(max_size=200), ARRAY_FILES), target=st.text(max_size=6))
@settings(max_examples=scaled(40))
def test_web_uploads_give_a_picture_or_a_page_message(name, content, target):
    pytest.importorskip("gradio")
    from gradcam.apps.web_files import explain_upload
    from gradcam.apps.web_state import AppError
    from gradcam.io.models import load_bundle

    bundle = load_bundle("py:tiny_models:TinySignal")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(content)
        try:
            result = explain_upload(path, bundle, "gradcam", target, 0.5, "jet", Path(folder) / "out")
        except AppError as error:
            _one_line(error)
        else:
            assert Path(result.picture).is_file() and result.files[-1].endswith("results.json")


def test_the_npy_builder_writes_what_numpy_reads():
    """The property above builds .npy headers by hand: check that one of them reads back."""
    content = _npy((2, 3), "<f4", struct.pack("<6f", *range(6)))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.npy"
        path.write_bytes(content)
        assert np.load(path).tolist() == [[0, 1, 2], [3, 4, 5]]
