"""Loading setups: every user mistake gives one clear message (SetupError / exit 2), never a raw traceback."""

from __future__ import annotations

import textwrap

import pytest
import torch
from helpers import EXAMPLES
from torch import nn

import nncheck
from nncheck.config import Config
from nncheck.context import Context
from nncheck.runner import run_setup
from nncheck.setup import SetupError, load_setup, setup_from_kwargs

GOOD_HEAD = """
import torch
from torch import nn
def model():
    return nn.Linear(4, 3)
"""


def write(tmp_path, body: str, name: str = "setup.py"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(body))
    return p


def preflight_error(path) -> str:
    sr = run_setup(load_setup(str(path)), Config(), {"only": ["initial-loss"]})
    assert sr.error is not None, "expected a setup error"
    return sr.error


def test_missing_file():
    with pytest.raises(SetupError, match=r"does_not_exist\.py: no such file"):
        load_setup("does_not_exist.py")


def test_not_python(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("hi")
    with pytest.raises(SetupError, match="not a Python file"):
        load_setup(str(p))


def test_import_error_shows_user_frames_only(tmp_path):
    p = write(tmp_path, "import torch\n\ndef helper():\n    raise ValueError('bad config value')\n\nhelper()\n")
    with pytest.raises(SetupError) as e:
        load_setup(str(p))
    msg = str(e.value)
    assert "raised ValueError while being imported: bad config value" in msg
    assert "setup.py" in msg and "line 4" in msg
    assert "importlib" not in msg and "nncheck/setup.py" not in msg


def test_syntax_error(tmp_path):
    p = write(tmp_path, "def model(:\n    pass\n")
    with pytest.raises(SetupError, match=r"setup\.py:1: syntax error"):
        load_setup(str(p))


def test_missing_model_names_file_and_found_names(tmp_path):
    p = write(tmp_path, "def make_net():\n    pass\n\ndef data():\n    return []\n")
    with pytest.raises(SetupError) as e:
        load_setup(str(p))
    msg = str(e.value)
    assert "defines no `model`" in msg and "make_net" in msg and str(p) in msg


def test_missing_data(tmp_path):
    p = write(tmp_path, GOOD_HEAD)
    with pytest.raises(SetupError, match="defines no `data`"):
        load_setup(str(p))


def test_model_not_a_module(tmp_path):
    p = write(tmp_path, GOOD_HEAD.replace("return nn.Linear(4, 3)", "return 42") + "def data():\n    return []\n")
    assert "returned int, not a torch.nn.Module" in preflight_error(p)


def test_empty_data(tmp_path):
    p = write(tmp_path, GOOD_HEAD + "def data():\n    return []\n")
    assert "yielded no batch" in preflight_error(p)


def test_data_not_batches(tmp_path):
    p = write(tmp_path, GOOD_HEAD + "def data():\n    return [torch.randn(8, 4)]\n")
    msg = preflight_error(p)
    assert "not an (inputs, targets) pair" in msg and "forward(model, batch)" in msg


def test_dict_batch_without_forward(tmp_path):
    p = write(tmp_path, GOOD_HEAD + "def data():\n    return [{'x': torch.randn(8, 4), 'y': torch.zeros(8)}]\n")
    assert "with keys ['x', 'y']" in preflight_error(p)


def test_incompatible_shapes_name_both_shapes(tmp_path):
    p = write(tmp_path, GOOD_HEAD + "def data():\n    return [(torch.randn(8, 4), torch.randn(8, 5))]\n")
    msg = preflight_error(p)
    assert "(8, 3)" in msg and "(8, 5)" in msg


def test_user_loss_shape_error_names_loss(tmp_path):
    body = GOOD_HEAD + ("loss = nn.MSELoss()\ndef data():\n    return [(torch.randn(8, 4), torch.randn(8, 5))]\n")
    msg = preflight_error(write(tmp_path, body))
    assert "MSELoss" in msg and "(8, 3)" in msg and "(8, 5)" in msg


def test_nonscalar_loss(tmp_path):
    body = GOOD_HEAD + (
        "def loss(out, y):\n    return (out - y) ** 2\n"
        "def data():\n    return [(torch.randn(8, 4), torch.randn(8, 3))]\n"
    )
    assert "must return a scalar tensor" in preflight_error(write(tmp_path, body))


def test_model_raises(tmp_path):
    body = "def model():\n    raise RuntimeError('no weights file')\n\ndef data():\n    return []\n"
    assert "model() raised RuntimeError: no weights file" in preflight_error(write(tmp_path, body))


def test_forward_raises_names_the_call(tmp_path):
    body = GOOD_HEAD + "def data():\n    return [(torch.randn(8, 7), torch.zeros(8, dtype=torch.long))]\n"
    msg = preflight_error(write(tmp_path, body))
    assert "model(x) on the first batch raised RuntimeError" in msg


def test_setup_imports_its_neighbours(tmp_path):
    (tmp_path / "mynet.py").write_text("from torch import nn\nNet = lambda: nn.Linear(4, 2)\n")
    body = (
        "import torch\nfrom mynet import Net\nmodel = Net\n"
        "def data():\n    return [(torch.randn(8, 4), torch.zeros(8).long())]\n"
    )
    s = load_setup(str(write(tmp_path, body)))
    assert isinstance(s.model(), nn.Module)


@pytest.mark.parametrize(
    ("out_shape", "target", "name"),
    [
        ((8, 5), torch.zeros(8, dtype=torch.long), "cross_entropy"),
        ((8, 6, 11), torch.zeros(8, 6, dtype=torch.long), "cross_entropy"),
        ((8, 3, 4, 4), torch.zeros(8, 4, 4, dtype=torch.long), "cross_entropy"),
        ((8, 1), torch.randint(0, 2, (8,)).float(), "bce_with_logits"),
        ((8, 4), torch.randint(0, 2, (8, 4)).float(), "bce_with_logits"),
        ((8, 1), torch.randn(8), "mse"),
        ((8, 3), torch.randn(8, 3), "mse"),
    ],
)
def test_loss_inference(out_shape, target, name):
    from nncheck.losses import infer_loss

    out = torch.randn(out_shape)
    fn, inferred = infer_loss(out, target, "x.py")
    assert inferred == name
    assert fn(out, target).numel() == 1


def test_api_model_instance_is_never_mutated():
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.1), nn.Linear(8, 2))
    net.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 4, generator=g), torch.randint(0, 2, (16,), generator=g)) for _ in range(4)]
    s = setup_from_kwargs(net, batches)
    ctx = Context(s)
    ctx.preflight()
    m = ctx.fresh_model()
    opt = ctx.optimizer(m)
    for b in ctx.batches(2) * 2:
        ctx.train_step(m, opt, b)
    assert m is not net
    assert not net.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_generator_data_is_replayed():
    def gen():
        for _ in range(3):
            yield torch.randn(4, 4), torch.zeros(4, dtype=torch.long)

    s = setup_from_kwargs(lambda: nn.Linear(4, 2), gen())
    first = list(s.data())
    second = list(s.data())
    assert len(first) == len(second) == 3
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, second))


def test_api_check_raises_setup_error_for_bad_setup():
    with pytest.raises(SetupError, match="no `model` given"):
        nncheck.check(model=None, data=[])


def test_examples_load():
    for f in sorted(EXAMPLES.glob("*.py")):
        if f.name.startswith("test_"):
            continue
        s = load_setup(str(f))
        assert callable(s.model)
