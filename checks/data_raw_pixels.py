"""Broken: images are fed as raw 8-bit values (0..255 as floats) without scaling or normalisation.

Bug: `torch.from_numpy(uint8_images).float()` without `/ 255` and `Normalize(mean, std)` (torchvision's
`ToTensor()` forgotten, or a custom dataset reading PNGs with PIL/cv2). Inputs have mean ~110 and std ~70, so the
first layer's pre-activations are ~100x larger than at a normalised input.
Symptom in a long run: a huge initial loss, unstable or diverging training at usual learning rates (or no progress
at small ones), saturated units.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Training / Preprocessing of training data / Missing normalisation";
Islam et al. (FSE 2019), data bugs; cs231n notes, "Data preprocessing".
"""

import torch
from torch import nn

EXPECT = {"data": "warn"}

N_CLASSES, BATCH, SIZE = 4, 32, 12


def model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, N_CLASSES),
    )


def data():
    g = torch.Generator().manual_seed(0)
    n = 8 * BATCH
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    img = torch.randint(0, 180, (n, 1, SIZE, SIZE), generator=g, dtype=torch.uint8)
    for i, c in enumerate(y.tolist()):  # the class is the bright quadrant
        r, s = divmod(c, 2)
        img[i, 0, r * 6 : r * 6 + 6, s * 6 : s * 6 + 6] += 75
    x = img.float()  # BUG: no `/ 255` and no Normalize(mean, std)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, n, BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
