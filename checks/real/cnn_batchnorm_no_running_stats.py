"""Broken: a small CNN classifier whose BatchNorm layers are built with `track_running_stats=False`, evaluated with
`model.eval()`.

Bug: without running statistics BatchNorm normalises with the statistics of the current batch in eval mode too
(PyTorch documents it), so a test image's prediction depends on the other images of its batch, and a batch of one
is normalised by its own statistics.
Symptom in a long run: validation accuracy depends on the evaluation batch size and order; deployed with batch
size 1 the model predicts nonsense.
Caught by batch-isolation in eval mode; the hint names the BatchNorm and its `track_running_stats=False`.
Source: https://pytorch.org/docs/stable/generated/torch.nn.BatchNorm2d.html ("If track_running_stats is set to
False, this layer then does not keep running estimates, and batch statistics are instead used during evaluation
time as well.").
"""

import torch
from torch import nn

EXPECT = {"batch-isolation": "fail"}

SIZE, BATCH, CLASSES = 16, 16, 4


def model():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16, track_running_stats=False), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32, track_running_stats=False), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, CLASSES),
    )  # BUG: track_running_stats=False: eval mode normalises with the batch's own statistics


def data():
    g = torch.Generator().manual_seed(16)
    batches = []
    for _ in range(8):
        labels = torch.randint(0, CLASSES, (BATCH,), generator=g)
        x = torch.randn(BATCH, 3, SIZE, SIZE, generator=g)
        x[torch.arange(BATCH), labels % 3] += 1.0  # the class tints one colour channel
        batches.append((x, labels))
    return batches


def optimizer(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)
