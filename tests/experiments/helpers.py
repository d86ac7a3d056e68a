"""Small configs and subprocess runners shared by the experiment tests."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np

from configs import cfm_toy

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_config(**train):
  """A CFM run small enough for unit tests (a second or two of training)."""
  c = cfm_toy.get_config("runlocal=true")
  c.log.progress = False
  c.train.async_checkpoint = False
  c.eval.num_samples = 128
  c.eval.plot_samples = 256
  for k, v in train.items():
    c.train[k] = v
  return c


def quiet(config):
  """A runlocal config for in-process tests: no progress bar, synchronous checkpoints, 1 device."""
  config.log.progress = False
  config.train.async_checkpoint = False
  config.train.num_devices = 1
  return config


def launch(module: str, *args: str, timeout: float = 300, env=None, wait=True):
  """Run `python -m module args` from the repo root (1 CPU device unless env says otherwise)."""
  cmd = [sys.executable, "-m", module, *args]
  full_env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
  if not wait:
    return subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
  return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)


def assert_trees_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
