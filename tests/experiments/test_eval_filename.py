"""eval_<tag>.json names: one file per (sampler, steps, guidance scale), so re-evaluating a
run at another guidance scale does not overwrite the first result."""

import types

import ml_collections

from experiments import sampling
from experiments.families.protocol import SampleRequest


def _run(describe=None):
  family = types.SimpleNamespace(**({"describe": describe} if describe else {}))
  config = ml_collections.ConfigDict({"sample": {"sampler": "dpm_solver++", "num_steps": 25}})
  return types.SimpleNamespace(family=family, config=config)


def test_default_tag_is_sampler_and_steps():
  assert sampling.eval_filename(_run(), SampleRequest()) == "eval_dpm_solver++_25.json"
  assert sampling.eval_filename(_run(), SampleRequest(sampler="ddim", num_steps=5)) \
      == "eval_ddim_5.json"


def test_a_given_guidance_scale_is_part_of_the_name():
  run = _run()
  names = {sampling.eval_filename(run, SampleRequest(guidance_scale=w)) for w in (0.0, 1.0, 2.0, 2.5)}
  assert names == {"eval_dpm_solver++_25_w0.json", "eval_dpm_solver++_25_w1.json",
                   "eval_dpm_solver++_25_w2.json", "eval_dpm_solver++_25_w2.5.json"}


def test_family_tags_get_the_same_suffix():
  run = _run(describe=lambda request: "dopri5")
  assert sampling.eval_filename(run, SampleRequest()) == "eval_dopri5.json"
  assert sampling.eval_filename(run, SampleRequest(guidance_scale=3)) == "eval_dopri5_w3.json"
