"""The public surface: a test that fails when a public name disappears (kornia's API-surface test).

Adding a name means adding it here too; removing one is a breaking change and needs a deprecation first."""

import importlib

import pytest

import gradcam

PUBLIC = {
    "gradcam": [
        "AuditResult", "BoxScore", "CAMMethod", "ChannelContributions", "ClassMaps", "ClassScore", "Concepts",
        "Explanation", "LayerResult",
        "LoadedModel", "Negative", "PhotoExplanation", "Positive", "Regression", "SegmentationScore", "Similarity",
        "TextPrompt", "audit", "auto_layer", "concepts", "explain", "explain_all", "explain_image", "get_method",
        "imagenet_labels",
        "list_layers", "load_model", "methods", "read_labels", "register", "with_labels",
    ],
    "gradcam.targets": ["BoxScore", "SegmentationScore", "ClassScore", "TextPrompt", "Similarity"],
    "gradcam.result": ["upsample", "normalise", "Explanation"],
    "gradcam.pipeline.ray": ["explain_dataset"],
    "gradcam.pipeline.records": ["PhotoRecord", "RunManifest", "TargetRecord", "read_manifest_file", "full_map"],
    "gradcam.apps.cli": ["main"],
    "gradcam.audits": ["audit", "AuditResult", "AuditError"],
    "gradcam.dff": ["concepts", "Concepts", "factorize", "nmf"],
    "gradcam.methods.legrad": ["LeGrad"],
    "gradcam.methods.concepts": ["DeepFeatureFactorization"],
}  # fmt: skip

COMMANDS = ["explain", "evaluate", "audit", "concepts", "layers", "models", "serve"]


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_every_public_name_is_still_there(module):
    loaded = importlib.import_module(module)
    missing = [name for name in PUBLIC[module] if not hasattr(loaded, name)]
    assert not missing, f"{module} lost {missing}"


def test_all_lists_exactly_the_top_level_names():
    assert sorted(gradcam.__all__) == sorted(PUBLIC["gradcam"])


def test_the_registered_methods_and_commands_stay(capsys):
    from gradcam.apps.cli import main

    for name in ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam", "scorecam", "ablationcam"]:
        assert name in gradcam.methods()
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert all(command in text for command in COMMANDS)


def test_python_m_gradcam_and_the_console_script_point_at_the_cli():
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "gradcam"]
    assert script.value == "gradcam.apps.cli:main"
