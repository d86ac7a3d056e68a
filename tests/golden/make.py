"""Writes tests/golden/golden.npz: python -m tests.golden.make (run once, before a refactor)."""

import os

import jax

# The same 8 fake CPU devices as the test session (tests/conftest.py): the trainer
# splits the batch over them, and the reduction order of a sharded loss changes the
# last bits, which a GAN critic amplifies within 20 steps.
jax.config.update("jax_num_cpu_devices", 8)

import numpy as np  # noqa: E402

from tests.golden import cases  # noqa: E402

PATH = os.path.join(os.path.dirname(__file__), "golden.npz")


def main():
  out = {**cases.sampler_outputs(), **cases.family_losses(), **cases.default_w2()}
  np.savez_compressed(PATH, **out)
  print(f"wrote {len(out)} arrays to {PATH}")


if __name__ == "__main__":
  main()
