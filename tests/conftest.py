"""Shared test configuration: one thread per worker (CI runs `pytest -n 2` on 2 cores)."""

import os
import sys

import torch

torch.set_num_threads(1)
sys.path.insert(0, os.path.dirname(__file__))
