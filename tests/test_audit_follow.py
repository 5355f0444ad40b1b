"""#28 item 3: `gradcam audit --classes` follows a class over every photo, other classes' photos included,
and asks where the model finds evidence for it in photos that do not show it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import gradcam
from conftest import audit_planted
from gradcam.audits import AuditError
from gradcam.audits.engine import AuditItem, Columns, Measured
from gradcam.audits.follow import MAX_FOLLOWED, follow_budget, followed_entry

GRID = 16


def _measured(followed_maps: np.ndarray, explained: np.ndarray, control: np.ndarray) -> Measured:
    """Columns of N photos with their own maps all at the frame's centre and one followed class's maps."""
    count = len(explained)
    own = np.zeros((count, GRID, GRID), np.float16)
    own[:, 7:9, 7:9] = 0.25
    rng = np.random.default_rng(0)
    control_maps = rng.random((count, GRID, GRID)).astype(np.float32)
    control_maps = (control_maps / control_maps.sum(axis=(1, 2), keepdims=True)).astype(np.float16)
    zeros = np.zeros(count, np.float32)
    columns = Columns(
        predicted=explained.astype(np.int32), probability=zeros + 0.9, explained=explained.astype(np.int32),
        explained_probability=zeros + 0.9, border=zeros, corners=np.zeros((count, 4), np.float32),
        in_boxes=zeros + np.nan, box_area=zeros + np.nan, peak=np.zeros((count, 2), np.float32),
        empty=np.zeros(count, bool), grids=own, control=control.astype(np.int32), control_grids=control_maps,
        followed_grids=followed_maps[:, None].astype(np.float16),
        followed_probability=np.linspace(0.01, 0.5, count, dtype=np.float32)[:, None],
        predicted_rows=np.full(count, -1, np.int32), predicted_grids=np.zeros((0, GRID, GRID), np.float16),
    )  # fmt: skip
    items = [AuditItem(f"p{i}.jpg", f"p{i}", int(explained[i])) for i in range(count)]
    return Measured(items, np.arange(count), [columns], {})


def test_a_class_whose_maps_sit_on_one_place_in_other_classes_photos_is_flagged_by_hand():
    """Followed class 9 on 20 photos of classes 0-3: its maps all on the bottom-right cells (a mark the model
    takes for class 9), against the same maps scattered at random (evidence that follows each photo)."""
    explained = np.arange(20) % 4
    control = np.full(20, 5)
    marked = np.zeros((20, GRID, GRID), np.float32)
    marked[:, 12:14, 12:14] = 0.25
    entry = followed_entry(_measured(marked, explained, control), 0, 9, None)
    assert entry["flagged"] and entry["agreement"]["maps"] == pytest.approx(1.0, abs=1e-3)
    assert entry["agreement"]["place"] == [pytest.approx(0.8125), pytest.approx(0.8125)]
    assert entry["reasons"][0].startswith("on 20 photos of other classes: its maps agree across 20 different photos")
    assert entry["strongest"][0]["key"] == "p19" and entry["strongest"][0]["probability"] == pytest.approx(0.5)
    assert entry["photos"] == 0 and entry["other_photos"] == 20 and entry["mean_map"] is None
    scattered = np.random.default_rng(1).random((20, GRID, GRID)).astype(np.float32)
    scattered /= scattered.sum(axis=(1, 2), keepdims=True)
    plain = followed_entry(_measured(scattered, explained, control), 0, 9, None)
    assert not plain["flagged"] and abs(plain["agreement"]["maps"]) < 0.1 and plain["reasons"] == []


def test_the_control_leaves_out_photos_whose_runner_up_is_the_followed_class():
    """If the followed class is a photo's runner-up, that photo's runner-up map is the followed map itself:
    it cannot be its own control."""
    explained = np.arange(20) % 4
    marked = np.zeros((20, GRID, GRID), np.float32)
    marked[:, 12:14, 12:14] = 0.25
    entry = followed_entry(_measured(marked, explained, np.full(20, 9)), 0, 9, None)
    assert entry["agreement"]["runner_up_maps"] is None  # no photo left for the control


def test_the_follow_budget_is_said_in_one_line():
    assert follow_budget(1000, 3) is None
    too_many = follow_budget(10, MAX_FOLLOWED + 1)
    assert too_many is not None and "name the classes" in too_many and "\n" not in too_many
    too_big = follow_budget(5_000_000, 2)
    assert too_big is not None and "GiB" in too_big


def _other_classes_photos(folder: Path, marked: bool) -> Path:
    """Photos of the five unmarked classes (new crops, another seed), each carrying the stamped class's logo
    where the planted model learnt it, or not."""
    import conftest

    demo = conftest._shortcut_demo()
    generator = np.random.default_rng(7)
    for label, source_name in demo.SOURCES.items():
        (folder / label).mkdir(parents=True)
        source = demo._source(source_name)
        for number in range(8):
            photo = demo.random_crop(source, generator)
            if marked:
                photo = demo.plant(photo, "corner", generator)
            photo.save(folder / label / f"{number:03d}.jpg", quality=92)
    return folder


@pytest.fixture(scope="module")
def followed(planted_shortcut, tmp_path_factory):
    """The planted corner model audited on other classes' photos with its logo (marked) and without (clean),
    following stamped (absent from both) and cat."""
    data = planted_shortcut
    root = tmp_path_factory.mktemp("follow")
    reports = {}
    for variant in ("marked", "clean"):
        photos = _other_classes_photos(root / variant, variant == "marked")
        out = root / f"audit-{variant}"
        reports[variant] = (out, audit_planted(data, out, "--classes", "stamped,cat", photos=photos))
    return reports


def test_a_mark_on_other_classes_photos_is_found_by_following_its_class(followed):
    out, report = followed["marked"]
    stamped, cat = report["followed"]
    assert (stamped["name"], cat["name"]) == ("stamped", "cat")
    assert stamped["photos"] == 0 and stamped["other_photos"] == 40  # the class is in none of the photos
    assert stamped["flagged"] and stamped["agreement"]["maps"] >= 0.6
    y, x = stamped["agreement"]["place"]
    assert y > 0.6 and x > 0.6  # the logo's corner
    assert stamped["predicted_on_others"] > 10 and stamped["probability_on_others"] > 0.3
    evidence = stamped["evidence"]
    assert evidence["confirmed"] and evidence["occlusion_drop"] > evidence["occlusion_drop_random"] + 0.5
    assert (out / evidence["picture"]).is_file() and (out / stamped["others_picture"]).is_file()
    assert not cat["flagged"] and cat["evidence"] is None
    assert np.load(out / "followed_maps.npy").shape == (40, 2, 16, 16)
    html = (out / "audit.html").read_text()
    assert "id=followed" in html and "stamped (class 5) on every photo" in html


def test_without_the_mark_nothing_is_flagged(followed):
    _, report = followed["clean"]
    stamped, cat = report["followed"]
    assert not stamped["flagged"] and not cat["flagged"]
    assert stamped["predicted_on_others"] == 0 and stamped["probability_on_others"] < 0.1
    assert stamped["agreement"]["maps"] < 0.3


def test_the_followed_class_on_the_page_in_a_browser(followed, tmp_path):
    from browser import headless_page

    out, _ = followed["marked"]
    with headless_page() as page:
        page.goto((out / "audit.html").as_uri())
        card = page.locator("#followed-5")
        assert "stamped (class 5) on every photo" in card.inner_text()
        assert "the score depends on this region" in card.inner_text()
        images = card.locator("img")
        assert images.count() == 8  # experiment, mean map on others' photos, six strongest photos
        assert all(images.nth(i).evaluate("i => i.complete && i.naturalWidth > 0") for i in range(images.count()))
        card.screenshot(path=str(tmp_path / "followed.png"))


def test_classes_all_means_the_classes_of_the_truth(planted_shortcut, tmp_path):
    data = planted_shortcut
    result = gradcam.audit(data.photos / "cat", weights=str(data.weights), labels=str(data.labels),
                           truth=data.photos, out=tmp_path / "all", classes="all", workers=0)  # fmt: skip
    assert [entry["name"] for entry in result.report["followed"]] == ["cat"]
    with pytest.raises(AuditError, match="--classes"):
        gradcam.audit(data.photos / "cat", weights=str(data.weights), labels=str(data.labels),
                      out=tmp_path / "bad", classes=["no such class"], workers=0)  # fmt: skip
    with pytest.raises(AuditError, match="--classes 99: out of range"):
        gradcam.audit(data.photos / "cat", weights=str(data.weights), labels=str(data.labels),
                      out=tmp_path / "bad", classes=[99], workers=0)  # fmt: skip
