"""Method options are checked before any work (#26 item 2): types the constructor declares, finite values,
counts at least 1, upper bounds (tighter in the web app); each bad one is one line naming the option."""

from __future__ import annotations

import pytest

import gradcam
from gradcam.apps.cli import main
from gradcam.pipeline.method_options import UPPER_BOUNDS, WEB_BOUNDS, method_with_options, methods_with_options
from gradcam.pipeline.options import UsageError

EXAMPLE = "examples/coffee.jpg"


@pytest.mark.parametrize(
    "method, key, text, said",
    [
        ("sscam", "samples", "0", "at least 1"),
        ("sscam", "samples", "-3", "at least 1"),
        ("sscam", "samples", "nan", "finite"),
        ("sscam", "samples", "2.5", "whole number"),
        ("sscam", "samples", "abc", "a whole number"),
        ("sscam", "samples", "2000", "at most 1000"),
        ("sscam", "std", "inf", "finite"),
        ("sscam", "std", "0", "greater than 0"),
        ("sscam", "seed", "true", "not true/false"),
        ("fem", "k", "-1", "greater than 0"),
        ("dff", "k", "0", "greater than 0"),
        ("scorecam", "batch_size", "none", "give a value"),
        ("finercam", "ranks", "1,0", "at least 1"),
        ("kpcacam", "gamma", "-0.5", "greater than 0"),
        ("legrad", "depth", "1e9", "whole number"),
    ],
)
def test_a_bad_value_is_one_line_naming_it(method, key, text, said):
    with pytest.raises(UsageError) as refused:
        method_with_options(method, [(key, text)])
    message = str(refused.value)
    assert message.startswith(f"--method-option {key}=") and said in message and "\n" not in message


@pytest.mark.parametrize(
    "method, key, text, value",
    [
        ("sscam", "samples", "8", 8),
        ("fem", "k", "1.5", 1.5),
        ("fem", "k", "2", 2),
        ("kpcacam", "gamma", "none", None),
        ("finercam", "ranks", "1,2", (1, 2)),
        ("randomcam", "seed", "none", None),
        ("sess", "pool", "max", "max"),
        ("sess", "smooth", "false", False),
    ],
)
def test_good_values_build_the_method(method, key, text, value):
    assert getattr(method_with_options(method, [(key, text)]), key) == value


def test_the_web_bounds_are_tighter_and_apply_to_every_method():
    assert all(WEB_BOUNDS[key] <= UPPER_BOUNDS[key] for key in WEB_BOUNDS)
    with pytest.raises(UsageError, match="at most 64 here"):
        methods_with_options(["sscam"], ["sscam:samples=2000"], WEB_BOUNDS)
    with pytest.raises(UsageError, match="at most 64 here"):
        methods_with_options(["gradcam", "sscam"], ["samples=65"], WEB_BOUNDS)
    (built,) = methods_with_options(["sscam"], ["samples=16"], WEB_BOUNDS)
    assert isinstance(built, gradcam.CAMMethod) and built.samples == 16


@pytest.mark.parametrize("option", ["samples=0", "samples=nan", "samples=x", "samples=-1"])
def test_the_command_line_refuses_them_before_running(tmp_path, capsys, option):
    out = tmp_path / "out"
    assert main(["explain", EXAMPLE, "--method", "sscam", "--method-option", option, "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gradcam: error: --method-option samples=") and not out.exists()
