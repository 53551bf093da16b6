"""Correct: a torch_geometric two-layer GCN (Kipf & Welling 2017) for node classification, trained full-graph:
one batch is the whole graph, the loss is taken on the training nodes only.

What it is: `data()` yields the graph itself as one dict batch (node features, edges, labels, training mask: the
fields of a `torch_geometric.data.Data`); `forward(model, graph)` runs `model(x, edge_index)` on every node and
returns the logits and labels of the training nodes. The batch cannot be cut into samples (cutting the node
features leaves edges pointing past them): nncheck notices it once and the probes that need a subset of samples
skip, saying so. The "samples" along the first dimension are nodes, and a node's output depends on its
neighbours by design (message passing), so the batch-isolation probe does not apply: the setup declares the skip,
as the README tells users of models that mix the batch on purpose.
Why it is right: the symmetric-normalised GCN with self-loops, dropout 0.5, Adam lr 0.01, weight decay 5e-4 (Kipf &
Welling's settings), labels in [0, C).
Source: https://pytorch-geometric.readthedocs.io/en/latest/get_started/introduction.html (the GCN example).
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GCNConv

CORRECT = True
nncheck = {"skip": ["batch-isolation"]}  # one sample = one node: message passing mixes nodes on purpose

NODES, FEATURES, CLASSES = 200, 16, 4


class GCN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = GCNConv(FEATURES, 32), GCNConv(32, CLASSES)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(self.dropout(x), edge_index))
        return self.conv2(self.dropout(h), edge_index)


def model():
    return GCN()


def data():
    # a stochastic block model: 4 communities, dense inside, sparse across; features = noisy community centroids
    g = torch.Generator().manual_seed(12)
    y = torch.arange(NODES) % CLASSES
    same = y[:, None] == y[None, :]
    p = torch.where(same, torch.tensor(0.08), torch.tensor(0.005))
    adj = torch.rand(NODES, NODES, generator=g) < p
    adj = torch.triu(adj, 1)
    edge_index = torch.cat([adj.nonzero().t(), adj.nonzero().t().flip(0)], 1)
    centroids = torch.randn(CLASSES, FEATURES, generator=g)
    x = centroids[y] + 1.5 * torch.randn(NODES, FEATURES, generator=g)
    train_mask = torch.rand(NODES, generator=g) < 0.5
    return [{"x": x, "edge_index": edge_index, "y": y, "train_mask": train_mask}]


def forward(model, graph):
    out = model(graph["x"], graph["edge_index"])
    return out[graph["train_mask"]], graph["y"][graph["train_mask"]]


def optimizer(params):
    return torch.optim.Adam(params, lr=0.01, weight_decay=5e-4)
