"""The family contract: what the trainer, the evaluation and the launchers may call on a family.

A family is a class implementing `Family` below, registered by name in
experiments/families/__init__.py. The trainer builds it once per run,
`Family(config, dataset)`, after `Family.check_config(config)` has passed, with
the dataset it trains on (shapes, labels, pixel range come from there; no family
builds a dataset itself).

Required:
  check_config(config)                 static; ValueError naming the field, nothing compiled
  __init__(config, dataset)
  init(key) -> params                  a plain pytree (jit, vmap over seeds, shard, checkpoint)
  loss(params, batch, key, step) -> (scalar loss, metrics dict)
                                       step: the int32 train step (traced), so step-dependent
                                       objectives read it instead of carrying counters
  sample(params, key, n, request=None) -> (x of shape (n, *data_shape), stats dict)
                                       request: a SampleRequest, None = the config's defaults
  check_request(request, n=None)       every refusal sample() would raise, without compiling:
                                       a ValueError naming the SampleRequest field
  name, conditional, num_classes, data_shape    attributes

Optional (the trainer and evaluation test `hasattr(family, hook)`; see OPTIONAL_HOOKS):
  phases() -> [Phase]                  several optimizers / alternating updates; without it the
                                       trainer trains all params on family.loss in one phase
  after_step(params, step) -> params   refresh frozen groups (an EMA target network)
  evaluate(params, key, dataset) -> dict      family metrics added to the run's evaluation
  sample_metrics(x) -> dict            family metrics of the samples the evaluation drew
  figures(params, key, workdir, step) -> [paths]   PNGs written at the end of a run
  describe(request) -> str             the tag of eval_<tag>.json (default <sampler>_<num_steps>)

Optional class attribute:
  supports_dequantize = True           the family trains on config.data.dequantize = L draws
                                       (uniformly dequantized digits, experiments/data.py);
                                       config checks refuse the field for the others

A family refuses a request field it cannot honour with a ValueError naming it
(`refuse`), e.g. "the gan family cannot honour SampleRequest.num_steps=10 (it
samples in one generator pass)"; sampler names and options are checked against
the sampler registries (research.diffusion.samplers.spec, research.flow.ode.spec)
with `sampler_spec` and `request_options` below, so a sampler registered there is
usable with no edit in a family.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

from research.registry import SamplerSpec

import jax.numpy as jnp

from experiments import validation

OPTIONAL_HOOKS = ("phases", "after_step", "evaluate", "figures", "describe", "sample_metrics")
REQUEST_FIELDS = ("sampler", "num_steps", "options", "labels", "guidance_scale", "clip_x0",
                  "prompt")
# The refusal of a prompt, for every family that is not an autoregressive model of text.
NO_PROMPT = {"prompt": "only an autoregressive model of text continues a prompt"}


@dataclasses.dataclass(frozen=True)
class SampleRequest:
  """How to sample: every field None (or empty) means the config's default.

  sampler: a registry name the family understands; num_steps: steps of the
  sampler (>= 1); options: the sampler's own options, a mapping or a
  "k=v,k2=v2" string (validated with the registry's spec.parse_options);
  labels: (n,) class labels of a class-conditional model; guidance_scale:
  classifier-free guidance w >= 0; clip_x0: "none" | "static" | "dynamic";
  prompt: the text an autoregressive text model continues (every row).
  """
  sampler: str | None = None
  num_steps: int | None = None
  options: Mapping | str = dataclasses.field(default_factory=dict)
  labels: Any = None
  guidance_scale: float | None = None
  clip_x0: str | None = None
  prompt: str | None = None

  def __post_init__(self):
    if self.sampler is not None:
      validation.non_empty_string(self.sampler, "SampleRequest.sampler")
    if self.num_steps is not None:
      validation.positive_int(self.num_steps, "SampleRequest.num_steps")
    if not isinstance(self.options, (str, Mapping)) and not hasattr(self.options, "keys"):
      raise ValueError(f"SampleRequest.options must be a mapping or a 'k=v,k2=v2' string, "
                       f"got {self.options!r}")
    if self.guidance_scale is not None:
      validation.non_negative_number(self.guidance_scale, "SampleRequest.guidance_scale")
    if self.clip_x0 is not None:
      validation.non_empty_string(self.clip_x0, "SampleRequest.clip_x0")
    if self.prompt is not None and not isinstance(self.prompt, str):
      raise ValueError(f"SampleRequest.prompt must be a string, got {self.prompt!r}")

  @classmethod
  def of(cls, request: "SampleRequest | None" = None, **fields) -> "SampleRequest":
    """`request` (default SampleRequest()) with the non-None keyword fields replaced."""
    if request is None:
      request = cls()
    elif not isinstance(request, cls):
      raise ValueError(f"request must be a SampleRequest or None, got {request!r}")
    unknown = sorted(set(fields) - set(REQUEST_FIELDS))
    if unknown:
      raise ValueError(f"unknown SampleRequest field(s) {unknown}; fields: {REQUEST_FIELDS}")
    fields = {k: v for k, v in fields.items() if v is not None}
    return dataclasses.replace(request, **fields) if fields else request

  def given(self) -> dict:
    """The fields set away from their defaults (None / empty options)."""
    return {f: getattr(self, f) for f in REQUEST_FIELDS
            if getattr(self, f) is not None and not (f == "options" and not self.options)}


@dataclasses.dataclass(frozen=True)
class Phase:
  """One optimizer update inside a train step.

  loss(params, batch, key, step) -> (loss, metrics) sees all params; gradients
  flow to params[group] only (all params if group is None), updated by the optax
  optimizer built from config[optim], `repeats` times per step on fresh batches.
  GANs use two phases (critic x n_critic, then generator); most families one.
  project(group_params) -> group_params, if given, is applied after every update
  of this phase (e.g. WGAN weight clipping after each critic update).
  """
  name: str
  loss: Callable
  group: str | None = None
  optim: str = "optim"
  repeats: int = 1
  project: Callable | None = None


@runtime_checkable
class Family(Protocol):
  """The required part of a family (see the module docstring for the optional hooks)."""
  name: str
  conditional: bool
  num_classes: int
  data_shape: tuple

  @staticmethod
  def check_config(config) -> None: ...

  def __init__(self, config, dataset) -> None: ...

  def init(self, key): ...

  def loss(self, params, batch, key, step): ...

  def sample(self, params, key, n: int, request: SampleRequest | None = None): ...

  def check_request(self, request: SampleRequest | None, n: int | None = None) -> None: ...


def refuse(family: str, field: str, value, reason: str):
  """Raise the one refusal message: the family, the field and value, and why."""
  if field == "labels" and value is not None:
    value = f"<{getattr(value, 'shape', len(value) if hasattr(value, '__len__') else '?')} labels>"
  elif field == "options" and not isinstance(value, str):
    value = dict(value)
  raise ValueError(f"the {family} family cannot honour SampleRequest.{field}={value!r} "
                   f"({reason})")


def as_request(request) -> SampleRequest:
  """SampleRequest() for None; ValueError for anything but a SampleRequest."""
  return SampleRequest.of(request)


def refuse_given(family: str, request: SampleRequest, reasons: Mapping[str, str]) -> None:
  """Refuse every field of `request` that is set and has a reason in `reasons`."""
  for field, value in request.given().items():
    if field in reasons:
      refuse(family, field, value, reasons[field])


def check_conditioning(family: str, request: SampleRequest, num_classes: int,
                       n: int | None = None) -> None:
  """labels / guidance_scale only for class-conditional models; labels (n,) in [0, K)."""
  if not num_classes:
    for field in ("labels", "guidance_scale"):
      if getattr(request, field) is not None:
        refuse(family, field, getattr(request, field),
               "the model is unconditional: config.model.num_classes = 0")
    return
  if request.labels is not None and n is not None:
    shape = tuple(getattr(request.labels, "shape", (len(request.labels),)))
    if shape != (n,):
      raise ValueError(f"SampleRequest.labels must have shape ({n},), got {shape}")


def labels_for(request: SampleRequest, n: int, num_classes: int):
  """The request's labels as int32, or 0, 1, ..., K-1, 0, ... (None for unconditional)."""
  if not num_classes:
    return None
  if request.labels is None:
    return jnp.arange(n, dtype=jnp.int32) % num_classes
  return jnp.asarray(request.labels, jnp.int32)


def guidance_for(request: SampleRequest, config) -> float:
  """The request's guidance scale, else config.sample.guidance_scale (default 1)."""
  if request.guidance_scale is not None:
    return float(request.guidance_scale)
  return float(config.sample.get("guidance_scale", 1.0))


# -- the sampler registries, as the families read them ---------------------------------
def sampler_spec(lookup: Callable[[str], SamplerSpec], name, field: str) -> SamplerSpec:
  """lookup(name) (samplers.spec or ode.spec); its ValueError, which lists every valid
  name, prefixed with `field` (e.g. "SampleRequest.sampler")."""
  try:
    return lookup(name)
  except ValueError as e:
    raise ValueError(f"{field}: {e}") from None


def sampler_options(spec: SamplerSpec, options, field: str,
                    fixed: Mapping[str, str] | None = None) -> dict:
  """spec.parse_options(options) for a "k=v,k2=v2" string, a mapping or a ConfigDict (None:
  {}), errors prefixed with `field`. fixed: {option: why} for options the family sets
  itself (refused even when the registry knows them)."""
  if options is None:
    options = {}
  elif not isinstance(options, str):
    options = options.to_dict() if hasattr(options, "to_dict") else dict(options)
  try:
    parsed = spec.parse_options(options)
  except (ValueError, TypeError) as e:
    raise ValueError(f"{field} {options!r} are invalid for {spec.kind} {spec.name!r}: {e}") \
        from None
  for key in parsed:
    if fixed and key in fixed:
      raise ValueError(f"{field}: option {key!r} of the {spec.kind} {spec.name!r} "
                       f"{fixed[key]}")
  return dict(parsed)


def request_options(spec: SamplerSpec, request: SampleRequest, config,
                    fixed: Mapping[str, str] | None = None) -> dict:
  """The checked options of a request: request.options, else config.sample.options when
  spec is the config's own sampler (they belong to that sampler only), else {}."""
  if request.options:
    return sampler_options(spec, request.options, "SampleRequest.options", fixed)
  if spec.name == config.sample.sampler:
    return sampler_options(spec, config.sample.get("options", ""), "config.sample.options",
                           fixed)
  return {}
