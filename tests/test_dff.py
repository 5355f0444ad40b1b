"""Deep Feature Factorization: the NMF (planted factors, scikit-learn's solver from the same start), the
concepts against pytorch-grad-cam's DFF (test oracle only), their votes, the `dff` class map by hand, the
`gradcam concepts` command, and the model left as it was."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import gradcam
from gradcam.apps.cli import main
from gradcam.dff import factorize, nmf
from gradcam.result import normalise, upsample
from test_model_state import assert_same, snapshot

EXAMPLES = Path(gradcam.__file__).parent / "examples"


def matched_correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rows of ``a`` and ``b`` (k, n) paired up to maximise their correlations (NMF's order is arbitrary)."""
    from scipy.optimize import linear_sum_assignment

    k = len(a)
    correlations = np.corrcoef(np.vstack([a, b]))[:k, k:]
    rows, columns = linear_sum_assignment(-correlations)
    return correlations[rows, columns]


def test_nmf_recovers_planted_parts():
    generator = torch.Generator().manual_seed(0)
    w0 = torch.rand(30, 3, generator=generator) * (torch.rand(30, 3, generator=generator) < 0.5)
    w0[:3] = torch.eye(3)  # zeros in both factors (each holds every part alone somewhere): a unique NMF
    # half the columns hold one part alone, the rest a random mix
    h0 = torch.rand(3, 200, generator=generator) * (torch.rand(3, 200, generator=generator) < 0.4)
    alone = torch.randint(0, 3, (100,), generator=generator)
    h0[:, :100] = torch.nn.functional.one_hot(alone, 3).T * torch.rand(100, generator=generator)
    w, h = nmf(w0 @ h0, 3, iterations=5000, tol=0)
    assert bool((w >= 0).all() and (h >= 0).all())
    assert float((w @ h - w0 @ h0).norm() / (w0 @ h0).norm()) < 1e-3
    assert matched_correlations(h.numpy(), h0.numpy()).min() >= 0.999


def test_nmf_matches_scikit_learn_from_the_same_start():
    decomposition = pytest.importorskip("sklearn.decomposition")
    x = torch.rand(40, 60, generator=torch.Generator().manual_seed(1))
    start = torch.rand(40, 4, generator=torch.Generator().manual_seed(2)), torch.rand(4, 60)
    w, h = nmf(x.double(), 4, iterations=3000, tol=0, init=start)  # in float64, as scikit-learn computes
    model = decomposition.NMF(4, init="custom", solver="cd", tol=1e-10, max_iter=3000)
    theirs_w = model.fit_transform(x.double().numpy(), W=start[0].double().numpy(), H=start[1].double().numpy())
    theirs = theirs_w @ model.components_
    np.testing.assert_allclose((w @ h).numpy(), theirs, atol=2e-3)
    assert matched_correlations(h.numpy(), model.components_).min() >= 0.999


def seeded_resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


def test_concepts_against_pytorch_grad_cam_and_their_votes():
    """NMF is unique only up to its local optimum: from its own start each solver lands on a factorisation
    as good as the other's (error within 1%), with the same concepts (maps paired up, r >= 0.98)."""
    pytest.importorskip("cv2")
    from pytorch_grad_cam import DeepFeatureFactorization

    model = seeded_resnet()
    torch.manual_seed(2)
    x = torch.randn(2, 3, 224, 224)
    ours = gradcam.concepts(model, x, k=4, layer="layer4")
    assert ours.maps.shape == (2, 4, 224, 224) and ours.raw.shape == (2, 4, 7, 7) and ours.vectors.shape == (4, 512)
    oracle = DeepFeatureFactorization(model=model, target_layer=model.layer4, computation_on_concepts=model.fc)
    _, explanations, _ = oracle(x, n_components=4)
    theirs = np.asarray(explanations)  # (B, k, 224, 224), each resized and scaled to [0, 1]
    ours_maps = normalise(upsample(ours.raw, (224, 224))).numpy()
    assert matched_correlations(ours_maps.transpose(1, 0, 2, 3).reshape(4, -1),
                                theirs.transpose(1, 0, 2, 3).reshape(4, -1)).min() >= 0.98  # fmt: skip
    activations = {}
    hook = model.layer4.register_forward_hook(lambda m, i, o: activations.update(a=o.detach()))
    model(x)
    hook.remove()
    flat = activations["a"].transpose(0, 1).reshape(512, -1)
    shifted = flat - flat.amin(dim=1, keepdim=True)
    w, h = nmf(shifted, 4)
    decomposition = pytest.importorskip("sklearn.decomposition")
    reference = decomposition.NMF(4, init="random", random_state=0)  # pytorch-grad-cam's own settings
    theirs_error = np.linalg.norm(shifted.numpy() - reference.fit_transform(shifted.numpy()) @ reference.components_)
    assert float((shifted - w @ h).norm()) <= 1.01 * theirs_error
    # each concept's votes: the head on a map that is the concept everywhere = fc(concept) for GAP + linear
    torch.testing.assert_close(ours.scores, model.fc(ours.vectors).detach(), atol=1e-4, rtol=1e-4)


def test_factorize_concepts_are_where_each_is_strongest():
    activations = torch.rand(2, 6, 3, 3, generator=torch.Generator().manual_seed(3))
    concepts, maps = factorize(activations, 2)
    flat = activations.transpose(0, 1).reshape(6, -1)
    offset = flat.amin(dim=1)
    w, h = nmf(flat - offset[:, None], 2)
    torch.testing.assert_close(concepts, (w * h.amax(dim=1) + offset[:, None]).T)
    torch.testing.assert_close(maps, (h * w.norm(dim=0)[:, None]).reshape(2, 2, 3, 3).transpose(0, 1))


def test_dff_class_map_by_hand():
    """``ReLU(sum_c w_c Â_c)``, Â each image's own k-concept reconstruction, w Grad-CAM's weights."""
    model = seeded_resnet()
    torch.manual_seed(4)
    x = torch.randn(2, 3, 160, 160)
    ex = gradcam.explain(model, x, gradcam.get_method("dff").__class__(k=3), targets=[2, 7])
    activations = {}
    hook = model.layer4.register_forward_hook(lambda m, i, o: activations.update(a=o))
    with torch.enable_grad():
        logits = model(x)
        (gradients,) = torch.autograd.grad(logits[[0, 1], [2, 7]].sum(), activations["a"])
    hook.remove()
    expected = []
    for b in range(2):
        flat = activations["a"][b].detach().flatten(1)
        offset = flat.amin(dim=1, keepdim=True)
        w, h = nmf(flat - offset, 3)
        rebuilt = (offset + w @ h).reshape(512, 5, 5)
        weights = gradients[b].mean(dim=(1, 2))
        expected.append(torch.einsum("c,chw->hw", weights, rebuilt).clamp(min=0))
    expected_maps = normalise(upsample(torch.stack(expected)[:, None], (160, 160)))
    torch.testing.assert_close(ex.maps, expected_maps, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match='targets="all"'):
        gradcam.explain(model, x, "dff", targets="all")


def test_concepts_leave_the_model_as_it_was():
    model = seeded_resnet().train()
    model.conv1.weight.requires_grad_(False)
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    before = snapshot(model)
    gradcam.concepts(model, torch.randn(3, 3, 64, 64), k=2, batch_size=2)
    assert_same(before, snapshot(model))
    with pytest.raises(ValueError, match="k=600 is more than the layer's 512 channels"):
        gradcam.concepts(model, torch.randn(1, 3, 64, 64), k=600)
    assert_same(before, snapshot(model))


def test_concepts_from_the_command_line(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("chelsea.jpg", "coffee.jpg", "astronaut.jpg"):
        (photos / name).write_bytes((EXAMPLES / name).read_bytes())
    (photos / "broken.jpg").write_bytes(b"not a photo")
    out = tmp_path / "out"
    code = main(["concepts", str(photos), "--k", "4", "--out", str(out), "--quiet"])
    error = capsys.readouterr().err
    assert code == 1 and "broken.jpg" in error and len(error.strip().splitlines()) == 1
    found = json.loads((out / "concepts.json").read_text())
    assert found["k"] == 4 and found["layer"] == "bn2" and len(found["concepts"]) == 4
    assert [f["image"] for f in found["failed"]] == [str(photos / "broken.jpg")]
    first_classes = [c["classes"][0]["class"] for c in found["concepts"]]
    assert "espresso" in first_classes and any("cat" in c for c in first_classes)
    by_photo = {Path(p["image"]).name: p for p in found["photos"]}
    coffee = by_photo["coffee.jpg"]
    assert abs(sum(coffee["shares"]) - 1) < 1e-4
    assert first_classes[int(np.argmax(coffee["shares"]))] == "espresso"  # the coffee photo is mostly that concept
    picture = Image.open(coffee["picture"])
    original = Image.open(EXAMPLES / "coffee.jpg")
    assert picture.width == original.width and picture.height > original.height  # the legend below
    assert main(["concepts", str(photos), "--out", str(out), "--quiet"]) == 2  # never replaced unasked
    assert main(["concepts", str(photos), "--out", str(tmp_path / "o2"), "--max-photos", "2", "--quiet"]) == 2
    assert "more than --max-photos 2" in capsys.readouterr().err


def test_dff_factorises_each_image_once_for_all_its_targets(monkeypatch):
    from gradcam.methods.concepts import DeepFeatureFactorization

    model, x = seeded_resnet(), torch.randn(2, 3, 128, 128)
    calls: list[int] = []
    original = DeepFeatureFactorization.reconstruction
    monkeypatch.setattr(DeepFeatureFactorization, "reconstruction",
                        lambda self, a: calls.append(1) or original(self, a))  # fmt: skip
    both = gradcam.explain(model, x, "dff", "layer4", targets=[[1, 4], [2, 5]])
    assert len(calls) == 1
    for k, classes in enumerate(([1, 2], [4, 5])):
        alone = gradcam.explain(model, x, "dff", "layer4", targets=classes)
        torch.testing.assert_close(both.maps[:, k], alone.maps[:, 0])


def test_concepts_of_a_vision_transformer_vote_through_its_head():
    """A transformer's layer gives tokens: the votes run the network after it on the concept in every token
    (class token too). At the encoder's output the rest is the class token and the head: heads(concept)."""
    from tiny_models import TinyViT

    model = TinyViT()
    found = gradcam.concepts(model, torch.randn(3, 3, 224, 224), k=2, layer="encoder")
    assert found.raw.shape == (3, 2, 7, 7) and found.vectors.shape == (2, 32)
    torch.testing.assert_close(found.scores, model.heads(found.vectors).detach(), atol=1e-5, rtol=1e-4)


def test_concepts_refuse_work_larger_than_the_memory_bound(monkeypatch):
    import gradcam.dff

    monkeypatch.setattr(gradcam.dff, "MAX_ACTIVATION_BYTES", 500_000)
    with pytest.raises(ValueError, match=r"concepts: 40 photos x \(512, 2, 2\) activations at layer4 need about"):
        gradcam.concepts(seeded_resnet(), torch.randn(40, 3, 64, 64), k=2, layer="layer4", batch_size=8)


def test_the_concepts_page_shows_every_photo_and_escapes_names(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "coffee.jpg").write_bytes((EXAMPLES / "coffee.jpg").read_bytes())
    hostile = "<img src=x onerror=alert(1)>'a#b.jpg"
    (photos / hostile).write_bytes((EXAMPLES / "chelsea.jpg").read_bytes())
    out = tmp_path / "out"
    assert main(["concepts", str(photos), "--k", "3", "--out", str(out), "--quiet"]) == 0
    page = (out / "concepts.html").read_text()
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;&#x27;a#b.jpg" in page
    assert page.count("<div class='card'>") == 2 and "espresso" in page and "https://" not in page
    assert "src='coffee.concepts.png'" in page and "%3Cimg%20src%3Dx" in page  # relative, percent-encoded
    assert main(["concepts", str(photos), "--k", "3", "--out", str(out), "--quiet"]) == 2  # not replaced unasked


def test_concepts_are_numbered_the_same_whatever_the_photos_order():
    """#27 item 7: the same three photos in reverse order renumbered (and so recoloured) the concepts
    (espresso, go-kart, tiger cat, football helmet became football helmet, tiger cat, go-kart, espresso).
    They are numbered by how much of the photos each holds, largest first."""
    from gradcam.io.images import preprocess, read_image
    from gradcam.io.models import load_model

    bundle = load_model("efficientnet_lite0")
    x = torch.stack([preprocess(read_image(EXAMPLES / f"{n}.jpg"), bundle.preprocessing)[0]
                     for n in ("chelsea", "coffee", "astronaut")])  # fmt: skip
    forward, backward = gradcam.concepts(bundle.model, x, k=4), gradcam.concepts(bundle.model, x.flip(0), k=4)
    assert [t[0][0] for t in forward.top_classes(1)] == [t[0][0] for t in backward.top_classes(1)]
    torch.testing.assert_close(forward.vectors, backward.vectors, atol=1e-3, rtol=1e-3)
    held = forward.raw.flatten(2).sum(dim=(0, 2))
    assert (held[:-1] >= held[1:]).all()  # largest first


def test_a_concept_coloured_like_the_photo_still_shows():
    """#27 item 7: the espresso concept's light blue on a light photo was nearly invisible (the tint blended
    into pixels of its own colour). The photo is now drawn in grey under the colours."""
    from PIL import Image

    from gradcam.render.concepts import colour_of, concept_picture

    light_blue = colour_of(1)
    photo = Image.new("RGB", (64, 48), light_blue)
    maps = torch.zeros(2, 48, 64)
    maps[1, 8:40, 8:56] = 1.0  # concept 2 (light blue) holds the middle of the photo
    picture = np.asarray(concept_picture(photo, maps, ["1  a", "2  b"]).convert("RGB"), dtype=np.float32)[:48]
    inside = picture[16:32, 20:44].mean(axis=(0, 1))
    # the tinted region does not look like the untouched photo (a tint the photo's own colour left it as it
    # was: no sign of the concept at all), and it is the concept's hue, bluer than red
    assert np.abs(inside - np.asarray(light_blue, dtype=np.float32)).max() > 20
    assert inside[2] - inside[0] > 60


def test_a_small_photo_s_concepts_are_drawn_wide_enough_for_their_legend():
    """A 32 x 32 photo's concept picture was 32 pixels wide, its legend cut to a letter; drawn enlarged, as
    overlays are."""
    import torch

    from gradcam.io.images import Geometry
    from gradcam.render.concepts import photo_concepts

    photo = Image.open(EXAMPLES / "chelsea.jpg").convert("RGB").resize((32, 32))
    geometry = Geometry(original=(32, 32), resized=(224, 224), crop_origin=(0, 0), crop=(224, 224))
    maps = torch.zeros(2, 7, 7)
    maps[0, :, :3], maps[1, :, 4:] = 1.0, 1.0
    picture = photo_concepts(photo, maps, geometry, [[("tabby", 0.6)], [("tiger cat", 0.3)]], [0.5, 0.5])
    assert picture.width == 320 and picture.height > 320  # each pixel a 10 x 10 block, the legend below
    left, right = picture.getpixel((40, 160)), picture.getpixel((280, 160))
    assert left != right  # the two concepts' colours, each on its own side
