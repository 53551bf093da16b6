"""Shared test configuration: one thread per worker (CI runs `pytest -n 2` on 2 cores)."""

import os
import sys

import torch

import nncheck.cli
import nncheck.worker  # noqa: F401

torch.set_num_threads(1)
# nncheck.cli and nncheck.worker are imported here, before any test: pytester's in-process runs
# (tests/test_pytest_plugin.py) drop the modules first imported inside them from sys.modules afterwards, and a CLI
# test run later in the same worker would then pickle nncheck.worker._child from a module that is no longer
# sys.modules["nncheck.worker"] ("Can't pickle <function _child>: it's not the same object").
sys.path.insert(0, os.path.dirname(__file__))
