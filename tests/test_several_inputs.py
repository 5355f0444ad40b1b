"""Models with several inputs: the map is laid on the image input, the others are held fixed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradcam


class ImageAndMetadata(nn.Module):
    """A CNN on the photo, a linear layer on tabular metadata, one head on both."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.meta = nn.Linear(4, 8)
        self.head = nn.Linear(16, 5)

    def forward(self, image: torch.Tensor, metadata: torch.Tensor) -> torch.Tensor:
        features = self.pool(self.backbone(image)).flatten(1)
        return self.head(torch.cat([features, self.meta(metadata)], dim=1))


class Keywords(ImageAndMetadata):
    def forward(self, pixels: torch.Tensor, metadata: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(pixels, metadata)


def test_tuple_and_dict_inputs_equal_the_image_bound_by_hand():
    model = ImageAndMetadata().eval()
    image, metadata = torch.randn(2, 3, 16, 16), torch.randn(2, 4)

    class ByHand(nn.Module):  # what a user would otherwise write
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x, metadata)

    expected = gradcam.explain(ByHand().eval(), image, layer="inner.backbone", targets="top-2")
    ex = gradcam.explain(model, (image, metadata), targets="top-2")
    assert ex.layer == "backbone" and ex.maps.shape == (2, 2, 16, 16)
    torch.testing.assert_close(ex.maps, expected.maps)
    torch.testing.assert_close(ex.targets, expected.targets)
    keyed = gradcam.explain(
        Keywords().eval(), {"metadata": metadata, "pixels": image}, layer="backbone.3", targets="top-2"
    )
    torch.testing.assert_close(keyed.maps, expected.maps)


def test_the_metadata_changes_the_map_and_the_model_is_left_as_found():
    model = ImageAndMetadata().train()
    image = torch.randn(1, 3, 16, 16)
    a = gradcam.explain(model, (image, torch.zeros(1, 4)), targets=[0])
    b = gradcam.explain(model, (image, 5 * torch.ones(1, 4)), targets=[0])
    assert a.scores.item() != b.scores.item()
    assert model.training and all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())


class Blended(ImageAndMetadata):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(a + b, torch.zeros(len(a), 4))


def test_which_input_holds_the_map_is_said_or_refused():
    model = ImageAndMetadata().eval()
    two_images = (torch.randn(1, 3, 16, 16), torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"2 float .* depends on 0, 1; say which holds the map with image_input="):
        gradcam.explain(Blended().eval(), two_images)
    assert gradcam.explain(Blended().eval(), two_images, image_input=1).maps.shape == (1, 1, 16, 16)
    with pytest.raises(ValueError, match="image_input=1: not a float"):
        gradcam.explain(model, (torch.randn(1, 3, 16, 16), torch.randn(1, 4)), image_input=1)
    with pytest.raises(ValueError, match="scorecam re-runs the model"):
        gradcam.explain(model, (torch.randn(1, 3, 16, 16), torch.randn(1, 4)), "scorecam")


class TwoImages(nn.Module):
    """A photo through a CNN, a second image (a mask, a reference) through a linear layer only."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.reference = nn.Linear(3 * 16 * 16, 8)
        self.head = nn.Linear(16, 5)

    def forward(self, reference: torch.Tensor, photo: torch.Tensor) -> torch.Tensor:
        features = self.backbone(photo).mean(dim=(2, 3))
        return self.head(torch.cat([features, self.reference(reference.flatten(1))], dim=1))


def test_of_two_images_the_map_goes_on_the_one_the_layer_depends_on():
    model = TwoImages().eval()
    reference, photo = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    ex = gradcam.explain(model, (reference, photo), targets=[1, 2])
    said = gradcam.explain(model, (reference, photo), targets=[1, 2], image_input=1)
    assert ex.layer == "backbone"
    torch.testing.assert_close(ex.maps, said.maps)
    keyed = gradcam.explain(model, {"photo": photo, "reference": reference}, layer="backbone.0", targets=[1, 2])
    assert keyed.maps.shape == (2, 1, 16, 16)
