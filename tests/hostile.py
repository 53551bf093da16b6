"""The malformed and hostile setups of issue 13, as source texts: each one a case of tests/test_hostile.py.

Every setup is self-contained (no sibling imports), tiny (8 features, 3 classes, batches of 16) and, apart from its
one defect, the same correct classifier as ``GOOD``.
"""

from __future__ import annotations

from pathlib import Path

GOOD = """
import torch
from torch import nn

def model():
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))

def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    y = x[:, :3].argmax(dim=1)
    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
"""

# A model class whose forward calls `_hook(self, x)` first: the cases below define the hook.
_NET = """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        _hook(self, x)
        return self.net(x)

def model():
    return Net()
"""


_GOOD_MODEL = "def model():\n    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))\n"


def _with_hook(hook: str) -> str:
    return GOOD.replace(_GOOD_MODEL, "") + hook + _NET


SETUPS: dict[str, str] = {
    "good": GOOD,
    # ---------------------------------------------------------------------------------------------- hangs
    # the first forward blocks forever (a lock / an event nobody sets)
    "block_forward": _with_hook(
        "import threading\n\ndef _hook(net, x):\n    threading.Event().wait()  # blocks forever\n"
    ),
    # the data generator blocks after its first batch (a queue nobody fills)
    "block_data": GOOD.replace(
        "def data():",
        "def data():\n    import time\n    yield from _data()[:1]\n    while True:\n"
        "        time.sleep(1000)  # a reader waiting forever\n\n\ndef _data():",
    ),
    # a retry loop that catches every Exception: a timeout raised as an Exception fires once and is swallowed
    "swallow_exception": _with_hook(
        "import time\n\ndef _hook(net, x):\n    while True:\n        try:\n            time.sleep(1000)\n"
        "        except Exception:  # retry on any error\n            continue\n"
    ),
    # ... and one that catches everything, KeyboardInterrupt and nncheck's timeout included: only a kill stops it
    "swallow_everything": _with_hook(
        "import time\n\ndef _hook(net, x):\n    while True:\n        try:\n            time.sleep(1000)\n"
        "        except BaseException:  # retry on anything\n            continue\n"
    ),
    # the forward of a model copy blocks from its 9th call on: the preflight passes, training probes hang
    "block_later": _with_hook(
        "import threading\n\ndef _hook(net, x):\n    if net.calls > 8:\n        threading.Event().wait()\n"
    ),
    # ---------------------------------------------------------------------------------------------- crashes
    "meta_device": GOOD.replace(
        "    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))",
        "    with torch.device('meta'):\n        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))",
    ),
    "lock_factory": _with_hook("import threading\n\ndef _hook(net, x):\n    pass\n").replace(
        "        self.calls = 0\n", "        self.calls = 0\n        self.lock = threading.Lock()\n"
    ),
    "lock_instance": _with_hook("import threading\n\ndef _hook(net, x):\n    pass\n").replace(
        "        self.calls = 0\n", "        self.calls = 0\n        self.lock = threading.Lock()\n"
    )
    + "\nmodel = Net()\n",
    # the process dies under nncheck (a C extension crashing, os._exit in a library)
    # (on the 6th forward of any copy of the model: the probes share the model's outputs at init, so no one copy
    # runs many forwards under `--only initial-loss`)
    "dies": _with_hook(
        "import os\n\n_forwards = [0]\n\ndef _hook(net, x):\n    _forwards[0] += 1\n    if _forwards[0] > 5:\n"
        "        os._exit(7)\n"
    ),
    # ---------------------------------------------------------------------------------------------- user output
    "prints": _with_hook(
        "import os\nprint('hello from the import of the setup file')\n\n"
        "def _hook(net, x):\n    print('forward called on', tuple(x.shape))\n"
        "    os.write(1, b'a raw write on file descriptor 1, as C code does\\n')\n"
    ),
    "exit_at_import": "import sys\nprint('about to exit')\nsys.exit(3)\n\ndef model():\n    pass\n\n"
    "def data():\n    pass\n",
    # ---------------------------------------------------------------------------------------------- wrong culprit
    "labels_later": GOOD.replace(
        "    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]",
        "    y[40] = 7  # BUG: a label out of range in batch 2\n"
        "    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]",
    ),
    "labels_one_based": GOOD.replace("y = x[:, :3].argmax(dim=1)", "y = x[:, :3].argmax(dim=1) + 1  # BUG: 1..3"),
    "all_frozen": GOOD.replace(
        "    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))",
        "    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))\n"
        "    net.requires_grad_(False)  # BUG: everything frozen\n    return net",
    ),
    "grad_off": GOOD + "\ntorch.set_grad_enabled(False)  # BUG: left over from an inference script\n",
    "zero_params": GOOD.replace(
        "def model():\n    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))",
        "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.layers = [nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)]  # BUG: a plain list\n\n"
        "    def forward(self, x):\n        for layer in self.layers:\n            x = layer(x)\n        return x\n\n\n"
        "def model():\n    return Net()",
    ),
    # an exception where nncheck does not expect one (a module whose train() raises)
    "train_raises": _with_hook("def _hook(net, x):\n    pass\n").replace(
        "def model():\n    return Net()",
        "def _train(self, mode=True):\n    raise RuntimeError('this model cannot be put in train mode')\n\n\n"
        "Net.train = _train\n\n\ndef model():\n    return Net()",
    ),
    "raises_third_call": _with_hook(
        "def _hook(net, x):\n    if net.calls == 3:\n        raise RuntimeError('flaky forward: third call')\n"
    ),
}


def write(folder: Path, *names: str) -> list[Path]:
    """Write the named setups into ``folder`` as ``<name>.py``; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        p = folder / f"{name}.py"
        p.write_text(SETUPS[name])
        out.append(p)
    return out
