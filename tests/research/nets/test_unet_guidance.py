"""UNet's optional guidance-scale embedding (LCM): default off leaves the network as it was;
on, the zero-initialised projection makes a teacher-initialised student equal the teacher."""

import subprocess
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.nets.mlp import functional
from research.nets.unet import UNet, guidance_scale_embedding

SMALL = dict(image_shape=(8, 8, 1), channels=8, channel_mult=(1, 2), num_res_blocks=1,
             attention_resolutions=(), num_classes=3, num_groups=4)
BASE_COMMIT = "e11c1fd"   # the last commit before the embedding existed


def _params(**kwargs):
  return functional(UNet(**SMALL, **kwargs, rngs=nnx.Rngs(0)))


def _paths(tree):
  return {jax.tree_util.keystr(p): np.shape(v) for p, v in
          jax.tree_util.tree_leaves_with_path(tree)}


def test_embedding_matches_diffusers_formula():
  w = np.array([0.0, 0.5, 3.0], np.float32)
  dim = 6
  half = dim // 2
  freqs = np.exp(-np.log(10000.0) * np.arange(half) / (half - 1))
  args = 1000.0 * w[:, None] * freqs
  want = np.concatenate([np.sin(args), np.cos(args)], axis=1)
  np.testing.assert_allclose(guidance_scale_embedding(w, dim), want, rtol=1e-5, atol=1e-4)
  odd = guidance_scale_embedding(w, 7)
  assert odd.shape == (3, 7) and np.all(np.asarray(odd[:, -1]) == 0)
  assert guidance_scale_embedding(jnp.float32(1.0), 8).shape == (8,)
  with pytest.raises(ValueError, match="dim"):
    guidance_scale_embedding(w, 2)


def test_default_off_tree_and_outputs_are_those_of_the_base_commit():
  try:
    source = subprocess.run(["git", "show", f"{BASE_COMMIT}:research/nets/unet.py"],
                            capture_output=True, text=True, check=True).stdout
  except (OSError, subprocess.CalledProcessError):
    pytest.skip("git history not available")
  old = types.ModuleType("old_unet")
  exec(compile(source, "old_unet.py", "exec"), old.__dict__)
  old_params, old_apply = functional(old.UNet(**SMALL, rngs=nnx.Rngs(0)))
  new_params, new_apply = _params()
  assert _paths(new_params) == _paths(old_params)
  for a, b in zip(jax.tree.leaves(new_params), jax.tree.leaves(old_params)):
    np.testing.assert_array_equal(a, b)
  params = jax.tree.map(lambda p: p + 0.05 * jnp.cos(jnp.arange(p.size).reshape(p.shape)),
                        new_params)
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
  t, y = jnp.array([3.0, 700.0]), jnp.array([0, 3])
  np.testing.assert_array_equal(new_apply(params, x, t, y), old_apply(params, x, t, y))


def test_on_adds_only_a_zero_projection_and_equals_the_teacher_at_every_w():
  teacher, apply_t = _params()
  student, apply_s = _params(guidance_embed_dim=16)
  extra = set(_paths(student)) - set(_paths(teacher))
  assert extra == {"['guidance_proj']['kernel']"}
  assert _paths(student)["['guidance_proj']['kernel']"] == (16, 8)
  assert not np.any(np.asarray(student["guidance_proj"]["kernel"]))
  # Every other leaf is initialised as without the projection (it is built last).
  for path, leaf in jax.tree_util.tree_leaves_with_path(teacher):
    got = student
    for k in path:
      got = got[k.key]
    np.testing.assert_array_equal(got, leaf)
  # A trained-looking teacher, copied into the student: equal outputs at any w.
  teacher = jax.tree.map(lambda p: p + 0.05 * jnp.sin(jnp.arange(p.size).reshape(p.shape)),
                         teacher)
  student = dict(teacher, guidance_proj=student["guidance_proj"])
  x = jax.random.normal(jax.random.key(2), (3, 8, 8, 1))
  t, y = jnp.array([0.0, 250.0, 999.0]), jnp.array([0, 1, 3])
  want = apply_t(teacher, x, t, y)
  for w in (0.0, 1.5, jnp.array([0.0, 2.0, 7.0])):
    np.testing.assert_array_equal(apply_s(student, x, t, y, w=w), want)
  # A non-zero projection makes w matter, through gradients too.
  moved = dict(student, guidance_proj={"kernel": student["guidance_proj"]["kernel"] + 0.1})
  out0, out2 = apply_s(moved, x, t, y, w=0.0), apply_s(moved, x, t, y, w=2.0)
  assert out0.shape == x.shape and not np.allclose(out0, out2)
  grad = jax.grad(lambda p: jnp.sum(apply_s(p, x, t, y, w=1.0) ** 2))(moved)
  assert np.any(np.asarray(grad["guidance_proj"]["kernel"]))


def test_w_is_required_when_on_and_refused_when_off():
  params, apply = _params()
  x, t = jnp.zeros((2, 8, 8, 1)), jnp.zeros((2,))
  with pytest.raises(ValueError, match="guidance_embed_dim=0"):
    apply(params, x, t, w=1.0)
  params, apply = _params(guidance_embed_dim=8)
  with pytest.raises(ValueError, match="w .*required"):
    apply(params, x, t)
  with pytest.raises(ValueError, match="w must have shape"):
    apply(params, x, t, w=jnp.zeros((3,)))
  for bad in (-1, 2, 1.5, True):
    with pytest.raises(ValueError, match="guidance_embed_dim"):
      UNet(**SMALL, guidance_embed_dim=bad, rngs=nnx.Rngs(0))
