"""The README's default job: conditional flow matching (I-CFM) on `moons`."""

from configs import cfm_toy


def get_config(arg: str | None = None):
  return cfm_toy.get_config(arg or "dataset=moons")
