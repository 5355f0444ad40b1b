"""The user's own fine-tuned checkpoint: a head of another size, named by --labels (issue 13, first part)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

import gradcam
from gradcam.apps.cli import main
from gradcam.io.images import preprocess, read_image
from gradcam.io.models import ModelLoadError, load_model, read_labels

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NAMES = ["cat", "dog", "cup", "person", "car", "tree", "boat"]


def explain_cli(*argv: str) -> int:
    return main(["explain", str(EXAMPLES / "chelsea.jpg"), *argv, "--workers", "0", "--quiet"])


@pytest.fixture
def seven_class_checkpoint(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=7).eval()
    path = tmp_path / "ft.pth"
    torch.save({"epoch": 12, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return path, model


def test_the_head_is_sized_from_the_checkpoint_and_indices_are_the_names(seven_class_checkpoint, tmp_path, capsys):
    path, _ = seven_class_checkpoint
    out = tmp_path / "out"
    assert explain_cli("--model", "resnet18", "--weights", str(path), "--out", str(out), "--target", "top2") == 0
    assert "a 7-class head, so resnet18 has 7 classes" in capsys.readouterr().err
    entry = json.loads((out / "results.json").read_text())["images"][0]
    assert [p["label"] for p in entry["predictions"]] == [str(p["index"]) for p in entry["predictions"]]
    assert len(entry["predictions"]) == 5 and all(0 <= p["index"] < 7 for p in entry["predictions"])
    assert explain_cli("--model", "resnet18", "--weights", str(path), "--out", str(tmp_path / "o2"),
                       "--target", "tiger cat") == 2  # fmt: skip
    assert "class names are unknown; give a class index" in capsys.readouterr().err


@pytest.mark.parametrize("layout", ["lines", "json-object", "json-list"])
def test_labels_name_the_classes_everywhere(seven_class_checkpoint, tmp_path, layout):
    path, _ = seven_class_checkpoint
    labels = tmp_path / ("names.txt" if layout == "lines" else "names.json")
    labels.write_text({
        "lines": "\n".join(NAMES) + "\n",
        "json-object": json.dumps({str(i): name for i, name in enumerate(NAMES)}),
        "json-list": json.dumps(NAMES),
    }[layout])  # fmt: skip
    out = tmp_path / "out"
    argv = ["--model", "resnet18", "--weights", str(path), "--labels", str(labels), "--out", str(out)]
    assert explain_cli(*argv, "--target", "dog,boat") == 0
    entry = json.loads((out / "results.json").read_text())["images"][0]
    assert {p["label"] for p in entry["predictions"]} <= set(NAMES)
    assert [(t["index"], t["label"]) for t in entry["targets"]] == [(1, "dog"), (6, "boat")]
    assert Path(entry["targets"][0]["files"]["overlay"]).name == "chelsea.gradcam.1-dog.jpg"
    assert '"label": "boat"' in (out / "index.html").read_text()


def test_labels_of_the_wrong_length_or_form_are_usage_errors(seven_class_checkpoint, tmp_path, capsys):
    path, _ = seven_class_checkpoint
    six = tmp_path / "six.txt"
    six.write_text("\n".join(NAMES[:6]))
    argv = ["--model", "resnet18", "--weights", str(path), "--out", str(tmp_path / "out")]
    assert explain_cli(*argv, "--labels", str(six)) == 2
    assert "--labels: 6 class names for a model with 7 classes" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text('{"0": "cat", ')
    with pytest.raises(ModelLoadError, match="not a JSON list"):
        read_labels(broken)
    gaps = tmp_path / "gaps.json"
    gaps.write_text('{"0": "cat", "2": "cup"}')
    assert read_labels(gaps) == ["cat", "1", "cup"]


def test_the_maps_are_those_of_the_same_model_explained_by_hand(seven_class_checkpoint, tmp_path):
    path, model = seven_class_checkpoint
    out = tmp_path / "out"
    assert explain_cli("--model", "resnet18", "--weights", str(path), "--out", str(out), "--save", "overlay,map") == 0
    entry = json.loads((out / "results.json").read_text())["images"][0]
    bundle = load_model("resnet18", "none")
    pixels, _ = preprocess(read_image(EXAMPLES / "chelsea.jpg", draft_size=bundle.preprocessing.resize),
                           bundle.preprocessing)  # fmt: skip
    by_hand = gradcam.explain(model, pixels[None], "gradcam", "layer4")
    assert entry["targets"][0]["index"] == int(by_hand.targets[0, 0])
    np.testing.assert_allclose(np.load(entry["targets"][0]["files"]["map"]), by_hand.maps[0, 0].numpy(), atol=1e-5)


def test_timm_and_the_embedded_model_take_fine_tuned_heads_too(tmp_path):
    import timm

    for name, arch in (("timm:resnet18", "resnet18"), ("efficientnet_lite0", "tf_efficientnet_lite0")):
        path = tmp_path / f"{arch}.pth"
        torch.save(timm.create_model(arch, num_classes=3).state_dict(), path)
        with pytest.warns(UserWarning, match="a 3-class head"):
            bundle = load_model(name, str(path))
        assert bundle.labels is None
        assert bundle.model(torch.zeros(1, 3, *bundle.preprocessing.crop)).shape == (1, 3)


def test_a_checkpoint_that_differs_elsewhere_than_the_head_still_does_not_fit(tmp_path):
    state = torchvision.models.resnet18(num_classes=7).state_dict()
    state["conv1.weight"] = torch.zeros(64, 1, 7, 7)  # a one-channel stem: not a head
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    with pytest.raises(ModelLoadError, match="does not fit this model"):
        load_model("resnet18", str(path))


def test_an_offline_timm_model_fails_at_once_naming_the_hub_and_weights(monkeypatch):
    """It took about 50 s of the hub client's retries; now the cache and the hub's port are checked first."""
    import socket
    import time

    from gradcam.io import hub

    def no_network(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as caught:
        load_model("timm:resnet34")
    assert time.perf_counter() - start < 2.0
    message = str(caught.value)
    assert "\n" not in message and "timm/resnet34" in message and "--weights FILE" in message
    monkeypatch.undo()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert hub.reachable(f"http://127.0.0.1:{server.getsockname()[1]}")
    assert not hub.reachable("not a url")


def test_the_python_recipe_of_docs_models(seven_class_checkpoint, tmp_path):
    path, model = seven_class_checkpoint
    names = tmp_path / "names.txt"
    names.write_text("\n".join(NAMES))
    with pytest.warns(UserWarning, match="a 7-class head"):
        bundle = gradcam.load_model("resnet18", str(path))
    bundle = gradcam.with_labels(bundle, gradcam.read_labels(names))
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    ex = gradcam.explain(bundle.model, x, labels=bundle.labels, targets="dog")
    assert ex.targets.tolist() == [[1]]
    torch.testing.assert_close(ex.maps, gradcam.explain(model, x, targets=1).maps)
