"""One image through a fruitnet checkpoint with torch, torchvision and Pillow only: the baseline
of `bench/startup.py`, the least a program does to answer the same question as
`python -m fruitnet.predict ckpt_path=CKPT input=IMAGE`.

    python bench/plain_predict.py CKPT IMAGE

It loads the checkpoint (weights_only), builds the network with the model registry (plain
``nn.Module`` code, as `bench/study_loop.py` does), decodes and stretches the image (norm=false
checkpoints), normalises it, and prints the top 5 classes. No Hydra, no run directory, no log,
no output file.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from fruitnet.models import create_model

ckpt = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
hp = ckpt["hyper_parameters"]
pre = hp["preprocess"]
net = create_model(
    hp["model_name"], num_classes=hp["num_classes"], input_size=hp["input_size"],
    **(hp.get("model_kwargs") or {}),
)  # fmt: skip
net.load_state_dict({k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})
net.eval()
with Image.open(sys.argv[2]) as img:
    image = torch.from_numpy(np.asarray(img.convert("RGB")).transpose(2, 0, 1).copy())
x = F.resize(image, [pre["size"], pre["size"]], antialias=True)[None]
x = F.normalize(F.to_dtype(x, torch.float32, scale=True), pre["mean"], pre["std"])
with torch.inference_mode():
    probs = net(x).softmax(-1)[0]
for p, i in zip(*probs.topk(min(5, len(probs))), strict=True):
    print(f"{hp['class_names'][i]} ({float(p):.3f})")
