"""The diffusion family refuses samplers that need a distilled model (`lcm`), before compiling.

The check reads the registry entry (SamplerSpec.requires = "consistency_distilled"),
so it names the field the sampler came from: config.sample.sampler or SampleRequest.sampler.
"""
import pytest

from configs import ddpm_toy
from experiments import configuration
from experiments.data import make_dataset
from experiments.families import diffusion as diffusion_family
from experiments.families.protocol import SampleRequest
from research.diffusion import samplers


def _config(sampler="ddpm"):
  c = ddpm_toy.get_config("runlocal=true")
  c.sample.sampler = sampler
  c.sample.num_steps = 4
  return c


def test_lcm_requires_a_distilled_model():
  assert samplers.spec("lcm").requires == "consistency_distilled"
  assert all(samplers.spec(n).requires is None for n in samplers.NAMES if n != "lcm")


def test_config_sampler_lcm_is_refused():
  with pytest.raises(ValueError, match=r"config\.sample\.sampler='lcm' needs an LCM-distilled"
                                       r" model.*family 'lcm'"):
    configuration.validate(_config("lcm"))
  with pytest.raises(ValueError, match="config.sample.sampler"):
    diffusion_family.check_sample_config(_config("lcm"))


def test_request_sampler_lcm_is_refused():
  config = _config()
  family = diffusion_family.Diffusion(config, make_dataset(config.data))
  with pytest.raises(ValueError, match=r"SampleRequest\.sampler='lcm' needs an LCM-distilled"
                                       r" model.*family 'lcm'"):
    family.check_request(SampleRequest(sampler="lcm", num_steps=4))
  family.check_request(SampleRequest(sampler="dpmpp_2m", num_steps=4))     # the presets are fine
  family.check_request(SampleRequest(sampler="euler_a", num_steps=4, options="steps_offset=0"))
