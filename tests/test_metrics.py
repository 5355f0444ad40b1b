"""Metrics on models small enough to know the answer, and the `gradcam evaluate` command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import gradcam
from gradcam import metrics
from gradcam.apps.cli import main
from gradcam.apps.evaluate import read_boxes
from tiny_models import TinyCNN

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


class PixelVote(torch.nn.Module):
    """Two classes; logit 0 is the sum of the input over the top-left 2x2 corner, logit 1 is 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x[:, :, :2, :2].sum(dim=(1, 2, 3))
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def corner_map() -> torch.Tensor:
    saliency = torch.zeros(1, 4, 4)
    saliency[0, :2, :2] = torch.tensor([[4.0, 3.0], [2.0, 1.0]])
    return saliency


def test_deletion_and_insertion_by_hand():
    # one channel, 4x4 ones; 4 steps of 4 pixels each. The map ranks the corner's 4 pixels first, so
    # deletion removes them all in step 1: logit 4 -> 0. Insertion starts from a blur of ones (= ones).
    x = torch.ones(1, 1, 4, 4)
    curves = metrics.deletion_insertion(PixelVote(), x, corner_map(), torch.tensor([0]), steps=4)
    torch.testing.assert_close(curves.fractions[0], torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    torch.testing.assert_close(curves.deletion[0], torch.tensor([sigmoid(4)] + [0.5] * 4))
    torch.testing.assert_close(curves.insertion[0], torch.full((5,), sigmoid(4)))
    # area: trapezoid of (s4, .5, .5, .5, .5) over quarter steps
    assert float(curves.deletion_auc[0]) == pytest.approx(0.25 * ((sigmoid(4) + 0.5) / 2 + 1.5))


def test_a_worse_map_deletes_slower():
    x = torch.ones(1, 1, 4, 4)
    backwards = 5 - corner_map()  # ranks the corner last
    good = metrics.deletion_insertion(PixelVote(), x, corner_map(), torch.tensor([0]), steps=4)
    bad = metrics.deletion_insertion(PixelVote(), x, backwards, torch.tensor([0]), steps=4)
    assert good.deletion_auc < bad.deletion_auc


def test_confidence_change_by_hand():
    x = torch.ones(2, 1, 4, 4)
    maps = torch.zeros(2, 4, 4)
    maps[0, :2, :2] = 0.5  # image 0 keeps half of the corner: logit 2
    maps[1, :2, :2] = 1.0  # image 1 keeps it all: logit 4, no drop
    change = metrics.confidence_change(PixelVote(), x, maps, torch.tensor([0, 0]))
    drop0 = (sigmoid(4) - sigmoid(2)) / sigmoid(4)
    assert change.average_drop == pytest.approx(100 * drop0 / 2, rel=1e-5)
    assert change.increase_in_confidence == 0.0


def test_imputation_reproduces_linear_images_and_is_deterministic():
    ramp = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(2, 3, 64, 64).contiguous()
    removed = torch.zeros(2, 1, 64, 64, dtype=torch.bool)
    removed[0, :, 10:50, 10:50] = True
    removed[1, :, 2:62:2, 1:63] = True  # every other row, away from the borders (fewer neighbours there)
    exact = metrics.noisy_linear_impute(ramp, removed, noise=0.0, iterations=200)
    torch.testing.assert_close(exact, ramp, atol=1e-4, rtol=0)
    fast = metrics.noisy_linear_impute(ramp, removed, noise=0.0)
    assert (fast - ramp).abs().max() < 0.02
    noisy = metrics.noisy_linear_impute(ramp, removed, noise=0.01)
    torch.testing.assert_close(noisy, metrics.noisy_linear_impute(ramp, removed, noise=0.01))
    assert torch.equal(noisy[~removed.expand_as(noisy)], ramp[~removed.expand_as(ramp)])
    assert 0.005 < float((noisy - fast)[removed.expand_as(noisy)].std()) < 0.015


def test_road_most_relevant_first_hurts_more():
    torch.manual_seed(0)
    x = torch.rand(1, 1, 8, 8) + 1.0
    saliency = torch.zeros(1, 8, 8)
    saliency[0, :2, :2] = 1.0
    model = PixelVote()
    scores = metrics.road(model, x, saliency, torch.tensor([0]), percentiles=(10, 50))
    assert scores.most_relevant_first.shape == (1, 2)
    assert (scores.most_relevant_first < scores.least_relevant_first).all()
    assert float(scores.combined[0]) > 0


def test_pointing_game_by_hand():
    maps = torch.zeros(2, 100, 100)
    maps[0, 50, 50] = 1.0  # peak inside the box
    maps[0, 0, 0] = 1.0 / 3  # a quarter of the energy outside
    maps[1, 90, 90] = 1.0  # peak 25 px from the box: a miss with the 15 px tolerance
    boxes = [torch.tensor([[40.0, 40.0, 60.0, 60.0]]), torch.tensor([[40.0, 40.0, 65.0, 65.0]])]
    result = metrics.pointing_game(maps, boxes)
    assert result.hits.tolist() == [True, False]
    torch.testing.assert_close(result.energy, torch.tensor([0.75, 0.0]))


def test_spearman_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    torch.manual_seed(0)
    a, b = torch.randn(3, 50), torch.randn(3, 50)
    b[1] = a[1] * 2 + 1
    for i in range(3):
        assert float(metrics.spearman(a, b)[i]) == pytest.approx(stats.spearmanr(a[i], b[i]).statistic, abs=1e-6)


def test_sanity_check_separates_a_faithful_method_from_an_edge_detector():
    torch.manual_seed(0)
    model, x = TinyCNN().eval(), torch.randn(4, 3, 32, 32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    targets = model(x).argmax(1).tolist()
    faithful = metrics.sanity_check(
        model, x, lambda m: gradcam.explain(m, x, "gradcam", "features.6", targets).maps[:, 0]
    )
    assert faithful.layers[0] == "classifier.2" and faithful.passed()
    edges = metrics.sanity_check(model, x, lambda m: (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().sum(1)[:, :, :31])
    assert not edges.passed()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # only a copy was randomised


def test_read_boxes_json_and_csv(tmp_path):
    boxes = read_boxes(EXAMPLES / "boxes.json", gradcam.imagenet_labels())
    assert boxes["coffee.jpg"][0] == (967, [170, 15, 420, 305])
    assert boxes["chelsea.jpg"][0][0] == -1
    table = tmp_path / "boxes.csv"
    table.write_text("image,class,x1,y1,x2,y2\nphotos/a.jpg,tiger cat,1,2,3,4\nb.jpg,*,0,0,5,5\nb.jpg,7,1,1,2,2\n")
    boxes = read_boxes(table, gradcam.imagenet_labels())
    assert boxes == {
        "a.jpg": [(282, [1.0, 2.0, 3.0, 4.0])],
        "b.jpg": [(-1, [0.0, 0.0, 5.0, 5.0]), (7, [1.0, 1.0, 2.0, 2.0])],
    }
    with pytest.raises(ValueError, match="cannot read boxes"):
        read_boxes(tmp_path / "missing.json", None)


def test_evaluate_command_writes_a_deterministic_report(tmp_path, capsys):
    argv = ["evaluate", str(EXAMPLES / "chelsea.jpg"), str(EXAMPLES / "coffee.jpg"), "--methods", "gradcam,layercam",
            "--steps", "4", "--boxes", str(EXAMPLES / "boxes.json")]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr().out
    assert "gradcam @ bn2" in printed and f"Report: {tmp_path / 'a' / 'report.html'}" in printed
    assert max(len(line) for line in printed.splitlines() if "Report:" not in line) < 100  # compact, not markdown
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    first = json.loads((tmp_path / "a" / "results.json").read_text())
    second = json.loads((tmp_path / "b" / "results.json").read_text())
    assert first["summary"] == second["summary"]
    entry = first["summary"][0]
    assert entry["images"] == 2 and entry["pointing"] == 100.0 and 0 < entry["energy_pointing"] <= 100
    assert 0 <= entry["deletion_auc"] < entry["insertion_auc"] <= 1
    assert (tmp_path / "a" / "curves.png").stat().st_size > 0
    assert entry["sanity_passed"] is None  # not asked for
    assert "Insertion AUC" in (tmp_path / "a" / "report.md").read_text()
    page = (tmp_path / "a" / "report.html").read_text()
    assert "<td>gradcam</td>" in page and 'src="curves.png"' in page and "https://" not in page


def test_evaluate_sanity_column(tmp_path, capsys):
    argv = ["evaluate", str(EXAMPLES / "coffee.jpg"), "--methods", "gradcam", "--steps", "2", "--sanity",
            "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "sanity passes when mean |r| < 0.5" in printed
    data = json.loads((tmp_path / "results.json").read_text())
    # the figure shown is the one the verdict uses: the mean of |r|, not the signed mean
    shown = data["summary"][0]["sanity_correlation"]
    assert shown == pytest.approx(abs(data["images"][0]["sanity_correlation"]))
    assert (shown < 0.5) == data["summary"][0]["sanity_passed"]
    image = data["images"][0]
    assert len(image["sanity_layers"]) == len(image["sanity_curve"]) == 6
    assert image["sanity_layers"][0] == "classifier"  # randomised from the top down
    assert data["summary"][0]["sanity_passed"] in (True, False)  # one photo decides little; see the unit test
    assert image["sanity_curve"][0] != 1.0  # randomising the classifier already changed the map
    # #27 item 10: the title "Sanity: mean |rank corr.|" split report.md's header into extra cells and
    # report.html's into three header cells
    table = [line for line in (tmp_path / "report.md").read_text().splitlines() if line.startswith("|")]
    import re

    widths = {len(re.split(r"(?<!\\)\|", line.strip()[1:-1])) for line in table}
    assert len(widths) == 1, table
    page = (tmp_path / "report.html").read_text()
    header = page.split("<thead><tr>", 1)[1].split("</tr>", 1)[0]
    first_row = page.split("<tbody><tr>", 1)[1].split("</tr>", 1)[0]
    assert header.count("<th>") == first_row.count("<td>") == widths.pop()
    assert "<th>Sanity: mean |rank corr.| (lower is better)</th>" in header
    # #27 item 10: both reports pointed to docs/evaluation.md, which a pip user does not have; they say
    # what each of their columns measures themselves
    markdown = (tmp_path / "report.md").read_text()
    assert "docs/evaluation.md" not in markdown + page
    assert "## How to read it" in markdown and "- Deletion AUC: pixels removed most-salient-first" in markdown
    assert "<dt>Sanity: mean |rank corr.|</dt><dd>rank correlation with the maps of the model randomised" in page
    assert "Pointing game" not in markdown.split("## How to read it")[1]  # no boxes: not a column, not explained


def test_evaluate_usage_errors(tmp_path, capsys):
    assert main(["evaluate", str(EXAMPLES / "chelsea.jpg"), "--methods", "gradcma", "--out", str(tmp_path)]) == 2
    assert "did you mean 'gradcam'" in capsys.readouterr().err
    assert main(["evaluate", str(EXAMPLES / "chelsea.jpg"), "--layers", "bn3", "--out", str(tmp_path)]) == 2
    assert "unknown layer 'bn3'" in capsys.readouterr().err


def test_evaluate_names_the_layer_notes_identical_maps_and_marks_the_best(tmp_path, capsys):
    """The curves' legend said "@ default" where the table said bn2; on a global-pool + linear head
    Grad-CAM, XGrad-CAM and HiRes-CAM give the same maps and their curves hid each other without a word."""
    argv = ["evaluate", str(EXAMPLES / "chelsea.jpg"), "--methods", "gradcam,xgradcam,hirescam,layercam",
            "--steps", "2", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "identical maps: gradcam @ bn2 = xgradcam @ bn2 = hirescam @ bn2" in printed
    data = json.loads((tmp_path / "results.json").read_text())
    assert set(data["curves"]) == {"gradcam @ bn2", "xgradcam @ bn2", "hirescam @ bn2", "layercam @ bn2"}
    assert data["identical"] == [["gradcam @ bn2", "xgradcam @ bn2", "hirescam @ bn2"]]
    page = (tmp_path / "report.html").read_text()
    assert "<b>" in page and "their curves coincide" in page
    assert "Identical maps: gradcam @ bn2 = xgradcam @ bn2 = hirescam @ bn2" in (tmp_path / "report.md").read_text()


def test_evaluate_takes_method_options(tmp_path, capsys):
    """`--method-option [METHOD:]KEY=VALUE` reaches the methods evaluate builds (dff's k changes its maps)."""
    argv = ["evaluate", str(EXAMPLES / "coffee.jpg"), "--methods", "gradcam,dff", "--steps", "4"]
    results = []
    for option in ("dff:k=1", "k=6"):
        out = tmp_path / option.replace(":", "-")
        assert main([*argv, "--method-option", option, "--out", str(out)]) == 0
        summary = json.loads((out / "results.json").read_text())["summary"]
        assert [entry["method"] for entry in summary] == ["gradcam", "dff"]
        results.append(summary[1]["deletion_auc"])
    assert results[0] != results[1]
    capsys.readouterr()
    for option, message in (("k=3", "no chosen method takes 'k'"), ("fem:k=1", "fem is not among the chosen methods"),
                            ("dff:k", "write it as KEY=VALUE")):  # fmt: skip
        assert main(["evaluate", str(EXAMPLES / "coffee.jpg"), "--methods", "gradcam", "--method-option", option,
                     "--out", str(tmp_path / "x")]) == 2  # fmt: skip
        assert message in capsys.readouterr().err
