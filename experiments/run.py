"""A run built from a config: dataset, family, mesh, optimizers, state layout and key streams.

What the trainer, the evaluation and the launchers share:

    run = build(config)                       # validate, then build everything once
    run, state = load(workdir)                # the same from WORKDIR/config.json + a checkpoint
    x, stats = sample(run, params, n, SampleRequest(...), seed_offset=0, replica=0)

`build` builds the dataset once and the family from it, `Family(config, dataset)`.
Keys derive from the seed only (init, train, sample, eval streams), so a run is a
function of its config.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from experiments import checkpoint, configuration, families, optim
from experiments import sharding as sharding_lib
from experiments.data import make_dataset
from experiments.families.protocol import Phase, SampleRequest

# fold_in tags separating the streams that derive from config.seed.
INIT, TRAIN, SAMPLE, EVAL = 0, 1, 2, 3


@dataclasses.dataclass
class Run:
  """Everything built from a config that the loop and the samplers need."""
  config: object
  family: object
  dataset: object
  mesh: jax.sharding.Mesh
  phases: tuple
  optimizers: dict
  state_shardings: object
  abstract_state: object
  keys: dict            # name -> key; stacked (num_seeds,) keys when num_seeds > 1
  num_seeds: int = 1

  @property
  def host_data(self) -> bool:
    """True when batches come from a host iterator (tfds + grain), not from a key in jit."""
    return bool(getattr(self.dataset, "host_data", False))

  @property
  def conditional(self) -> bool:
    """True when the family trains on (x, label) batches."""
    return bool(getattr(self.family, "conditional", False))

  def keys_of(self, i: int) -> dict:
    """The keys of replica i (replica i of a num_seeds run uses seed config.seed + i)."""
    if self.num_seeds == 1:
      return self.keys
    return {name: k[i] for name, k in self.keys.items()}


def phases_of(family) -> tuple[Phase, ...]:
  """The family's phases, or one phase training all params on family.loss."""
  if hasattr(family, "phases"):
    return tuple(family.phases())
  return (Phase("model", family.loss),)


def seed_keys(seed: int) -> dict:
  """The independent key streams (init, train, sample, eval) of one seed."""
  root = jax.random.key(seed)
  return {name: jax.random.fold_in(root, tag) for name, tag in
          (("init", INIT), ("train", TRAIN), ("sample", SAMPLE), ("eval", EVAL))}


def replicated(fn, num_seeds: int):
  """fn itself, or fn vmapped over a leading replica axis of every argument (num_seeds > 1)."""
  return fn if num_seeds == 1 else jax.vmap(fn)


def group_of(params, group):
  """params[group], or all params for group None."""
  return params if group is None else params[group]


def initial_state(family, phases, optimizers, key) -> dict:
  """The state at step 0: params, one optimizer state per phase, EMA = params."""
  params = family.init(key)
  return {
      "step": jnp.zeros((), jnp.int32),
      "params": params,
      "opt_state": {p.name: optimizers[p.name].init(group_of(params, p.group)) for p in phases},
      "ema_params": jax.tree.map(jnp.copy, params),
      "first_nonfinite": jnp.full((), -1, jnp.int32),
  }


def build(config) -> Run:
  """Validate the config, then build data (once), family, mesh, optimizers and state layout."""
  configuration.validate(config)
  dataset = make_dataset(config.data)
  family = families.get(config.family)(config, dataset)
  mesh = sharding_lib.make_mesh(config.train.get("num_devices", 0) or None)
  sharding_lib.check_batch_divisible(config.train.batch_size, mesh)
  phases = phases_of(family)
  optimizers = {p.name: optim.make_optimizer(config[p.optim], config.train.num_steps) for p in phases}
  num_seeds = int(config.get("num_seeds", 1))
  keys = seed_keys(config.seed)
  if num_seeds > 1:  # replica i is the run with seed config.seed + i
    per_replica = [seed_keys(config.seed + i) for i in range(num_seeds)]
    keys = {name: jnp.stack([k[name] for k in per_replica]) for name in keys}
  init = replicated(lambda k: initial_state(family, phases, optimizers, k), num_seeds)
  abstract = jax.eval_shape(init, keys["init"])
  shardings = sharding_lib.param_sharding(abstract, mesh, config.train.get("param_sharding", "replicated"))
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)
  return Run(config, family, dataset, mesh, phases, optimizers, shardings, abstract, keys,
             num_seeds)


def init_state(run: Run):
  """The initial state of every replica, laid out with the run's shardings."""
  init = replicated(lambda k: initial_state(run.family, run.phases, run.optimizers, k),
                    run.num_seeds)
  return jax.jit(init, out_shardings=run.state_shardings)(run.keys["init"])


def current_step(state) -> int:
  """The step of a (possibly replica-stacked) state as a Python int."""
  return int(np.asarray(jax.device_get(state["step"])).reshape(-1)[0])


def load(workdir: str, step: int | None = None):
  """(run, state) built from WORKDIR/config.json and restored from its latest (or given) checkpoint.

  The EMA parameters to sample or evaluate are state["ema_params"] (see replica_params).
  """
  config = configuration.load_json(workdir)
  run = build(config)
  manager = checkpoint.make_manager(workdir, every=config.train.checkpoint_every, async_save=False)
  try:
    if manager.latest_step() is None:
      raise FileNotFoundError(f"no checkpoint under {workdir}/checkpoints")
    state, _ = checkpoint.restore(manager, run.abstract_state, step)
  finally:
    manager.close()
  return run, state


def replica_params(run: Run, params, i: int):
  """Replica i's parameters (params itself when num_seeds == 1)."""
  if not 0 <= i < run.num_seeds:
    raise ValueError(f"replica must be in [0, {run.num_seeds}), got {i}")
  return params if run.num_seeds == 1 else jax.tree.map(lambda a: a[i], params)


def sample(run: Run, params, n: int, request: SampleRequest | None = None, *,
           seed_offset: int = 0, replica: int = 0, **fields):
  """Draw n samples from the family with (single-replica) params; returns (x, stats).

  request: a SampleRequest (None: the config's defaults); keyword `fields`
  (sampler=, num_steps=, labels=, ...) override its fields, for callers that pass them
  one by one. The key is fold_in(sample key of `replica`, seed_offset). For latent data
  (config.data.autoencoder_workdir) the family's latents are decoded here, the one place:
  x is images in the pixel set's range (experiments/latent.py).
  """
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
    raise ValueError(f"n must be an integer >= 1, got {n!r}")
  request = SampleRequest.of(request, **fields)
  key = jax.random.fold_in(run.keys_of(replica)["sample"], seed_offset)
  x, stats = run.family.sample(params, key, int(n), request)
  if getattr(run.dataset, "modality", None) == "latents":   # experiments/latent.py: images
    # (a text set's `decode` turns tokens into strings: the AR family does that itself)
    x = run.dataset.decode(x)
  return x, stats


def check_request(run: Run, request: SampleRequest | None, n: int | None = None) -> None:
  """The family's refusals of `request` (ValueError naming the field), nothing compiled."""
  run.family.check_request(SampleRequest.of(request), n)
