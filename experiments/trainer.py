"""The one training loop: every family plugs in init / loss / sample.

The trainer owns the optimizer (optax), the EMA, the jitted and sharded step,
orbax checkpoints, metrics.jsonl, the progress bar and the sample plots. The
workdir is the only state: relaunching the same command resumes from the last
complete checkpoint. Keys derive from (seed, step) -- data, noise and sampling
-- so a resumed run ends bit-identical to an uninterrupted one, and the global
batch (and so every loss) does not depend on the number of devices.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import checkpoint, configuration, evaluation, families, logs, optim, plotting
from experiments import sharding as sharding_lib
from experiments.data import make_dataset

# fold_in tags separating the streams that derive from config.seed.
INIT, TRAIN, SAMPLE, EVAL = 0, 1, 2, 3


class NonFiniteLossError(FloatingPointError):
  """Raised when the loss stops being finite; the last good checkpoint is kept."""


@dataclasses.dataclass(frozen=True)
class Phase:
  """One optimizer update inside a train step.

  loss(params, batch, key) -> (loss, metrics) sees all params; gradients flow to
  params[group] only (all params if group is None), updated by the optax
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


def phases_of(family) -> tuple[Phase, ...]:
  """The family's phases, or one phase training all params on family.loss."""
  if hasattr(family, "phases"):
    return tuple(family.phases())
  return (Phase("model", family.loss),)


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
  keys: dict


def build(config) -> Run:
  """Validate the config, then build family, data, mesh, optimizers and state layout."""
  configuration.validate(config)
  family = families.get(config.family)(config)
  dataset = make_dataset(config.data)
  mesh = sharding_lib.make_mesh(config.train.get("num_devices", 0) or None)
  sharding_lib.check_batch_divisible(config.train.batch_size, mesh)
  phases = phases_of(family)
  optimizers = {p.name: optim.make_optimizer(config[p.optim], config.train.num_steps) for p in phases}
  root = jax.random.key(config.seed)
  keys = {name: jax.random.fold_in(root, tag) for name, tag in
          (("init", INIT), ("train", TRAIN), ("sample", SAMPLE), ("eval", EVAL))}
  abstract = jax.eval_shape(lambda k: _initial_state(family, phases, optimizers, k), keys["init"])
  shardings = sharding_lib.param_sharding(abstract, mesh, config.train.get("param_sharding", "replicated"))
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)
  return Run(config, family, dataset, mesh, phases, optimizers, shardings, abstract, keys)


def _group(params, group):
  return params if group is None else params[group]


def _initial_state(family, phases, optimizers, key):
  params = family.init(key)
  return {
      "step": jnp.zeros((), jnp.int32),
      "params": params,
      "opt_state": {p.name: optimizers[p.name].init(_group(params, p.group)) for p in phases},
      "ema_params": jax.tree.map(jnp.copy, params),
      "first_nonfinite": jnp.full((), -1, jnp.int32),
  }


def init_state(run: Run):
  return jax.jit(lambda k: _initial_state(run.family, run.phases, run.optimizers, k),
                 out_shardings=run.state_shardings)(run.keys["init"])


def update_keys(train_key: jax.Array, step, draw) -> tuple[jax.Array, jax.Array]:
  """(data_key, loss_key) of update number `draw` (0-based within the step) at `step`."""
  return tuple(jax.random.split(jax.random.fold_in(jax.random.fold_in(train_key, step), draw)))


def make_train_step(run: Run):
  """jit(state, key) -> (state, metrics): one train step (every phase, every repeat).

  Update d of step s draws its batch from data(fold_in(fold_in(key, s), d)) and its
  loss noise from the same key, so the run is a function of (seed, step). The
  state is donated; batches are laid out over the "data" mesh axis. After the
  updates, family.after_step(params, step) (if defined) may refresh frozen groups
  (e.g. an EMA target network); then the evaluation EMA is updated.
  """
  config, family, phases = run.config, run.family, run.phases
  batch_size, decay = config.train.batch_size, config.ema_decay
  batch_layout = sharding_lib.batch_sharding(run.mesh)
  schedule = optim.learning_rate(config.optim, config.train.num_steps)
  offsets = [sum(p.repeats for p in phases[:i]) for i in range(len(phases))]

  def step_fn(state, key):
    step = state["step"]
    params, opt_states, metrics, losses = state["params"], dict(state["opt_state"]), {}, []
    for phase, offset in zip(phases, offsets):
      tx = run.optimizers[phase.name]

      def update(carry, r, phase=phase, offset=offset, tx=tx):
        params, opt_state = carry
        data_key, loss_key = update_keys(key, step, offset + r)
        batch = jax.lax.with_sharding_constraint(run.dataset.sample(data_key, batch_size),
                                                 batch_layout)

        def loss_fn(trained):
          full = trained if phase.group is None else {**params, phase.group: trained}
          return phase.loss(full, batch, loss_key)

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(_group(params, phase.group))
        updates, opt_state = tx.update(grads, opt_state, _group(params, phase.group))
        trained = optax.apply_updates(_group(params, phase.group), updates)
        if phase.project is not None:
          trained = phase.project(trained)
        params = trained if phase.group is None else {**params, phase.group: trained}
        return (params, opt_state), {**aux, "loss": loss, "grad_norm": optax.tree.norm(grads)}

      (params, opt_states[phase.name]), out = jax.lax.scan(
          update, (params, opt_states[phase.name]), jnp.arange(phase.repeats))
      last = jax.tree.map(lambda x: x[-1], out)
      losses.append(out["loss"])
      prefix = "" if len(phases) == 1 else f"{phase.name}/"
      metrics.update({prefix + k: v for k, v in last.items()})
    if len(phases) > 1:
      metrics["loss"] = last["loss"]  # the last phase's loss (e.g. the generator's)
    if hasattr(family, "after_step"):
      params = family.after_step(params, step)
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state["ema_params"], params)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(l)) for l in losses]))
    bad = ~finite & (state["first_nonfinite"] < 0)
    new_state = {
        "step": step + 1,
        "params": params,
        "opt_state": opt_states,
        "ema_params": ema,
        "first_nonfinite": jnp.where(bad, step, state["first_nonfinite"]),
    }
    return new_state, {**metrics, "lr": schedule(step)}

  replicated = sharding_lib.replicated(run.mesh)
  return jax.jit(step_fn, in_shardings=(run.state_shardings, replicated),
                 out_shardings=(run.state_shardings, replicated), donate_argnums=0)


def restore_or_init(run: Run, manager):
  """The latest checkpoint in the workdir, or a fresh state if there is none."""
  if manager.latest_step() is not None:
    state, _ = checkpoint.restore(manager, run.abstract_state)
    return state, True
  return init_state(run), False


def sample(run: Run, params, n: int, *, seed_offset: int = 0, **sampler_options):
  """Draw n samples from the family with the given params; returns (x, stats)."""
  key = jax.random.fold_in(run.keys["sample"], seed_offset)
  return run.family.sample(params, key, n, **sampler_options)


def _check_finite(state, manager) -> None:
  bad = int(state["first_nonfinite"])
  if bad >= 0:
    last = manager.latest_step()
    raise NonFiniteLossError(
        f"non-finite loss at step {bad}; training stopped. The last good checkpoint "
        f"(step {last}) is kept in {manager.directory}")


def _plot(run: Run, workdir: str, samples, step: int) -> str | None:
  """Scatter 2-D samples beside a fresh data draw into WORKDIR/samples_<step>.png."""
  if tuple(run.dataset.shape) != (2,) or jax.process_index() != 0:
    return None
  ref = run.dataset.sample(jax.random.fold_in(run.keys["eval"], step), samples.shape[0])
  path = os.path.join(workdir, f"samples_{step:07d}.png")
  return plotting.scatter_samples(path, samples, ref,
                                  title=f"{run.config.family} on {run.config.data.name}, step {step}")


def train_and_evaluate(config, workdir: str) -> dict:
  """Train (resuming from the workdir if it holds checkpoints), then evaluate the EMA params.

  Returns a summary dict (also written to WORKDIR/eval.json). If SIGTERM arrives,
  saves a checkpoint and returns {"status": "preempted", ...} without evaluating.
  """
  run = build(config)  # raises ValueError on a bad config before anything compiles
  os.makedirs(workdir, exist_ok=True)
  configuration.save_json(config, workdir)
  tc = config.train
  manager = checkpoint.make_manager(workdir, every=tc.checkpoint_every, keep=tc.get("keep", 3),
                                    keep_every=tc.get("keep_every", 0),
                                    async_save=tc.get("async_checkpoint", True))
  writer = logs.MetricWriter(workdir, tensorboard=config.get("log", {}).get("tensorboard", False))
  preempted = checkpoint.PreemptionFlag()
  try:
    state, resumed = restore_or_init(run, manager)
    step = int(state["step"])
    t0 = time.perf_counter()
    train_step = make_train_step(run).lower(state, run.keys["train"]).compile()
    compile_s = time.perf_counter() - t0
    meta = {"family": config.family, "data": config.data.name}
    if step < tc.num_steps:
      writer.write(step, {}, event="resume" if resumed else "start", compile_s=compile_s,
                   num_devices=int(run.mesh.devices.size))
    progress = logs.Progress(step, tc.num_steps, enabled=config.get("log", {}).get("progress", True))
    pending, t_window, s_window = [], time.perf_counter(), step
    last_saved = manager.latest_step()
    while step < tc.num_steps:
      if preempted:
        _check_finite(state, manager)
        if last_saved != step:
          checkpoint.save(manager, step, state, meta, force=True)
        manager.wait_until_finished()
        progress.close()
        writer.write(step, {}, event="preempted")
        return {"status": "preempted", "step": step}
      state, metrics = train_step(state, run.keys["train"])
      step += 1
      pending.append(metrics)
      if step % tc.log_every == 0 or step == tc.num_steps:
        window = jax.device_get(pending)
        _check_finite(state, manager)
        now = time.perf_counter()
        mean = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
        writer.write(step, mean, steps_per_sec=(step - s_window) / (now - t_window))
        progress.update(step, mean["loss"], force=True)
        pending, t_window, s_window = [], now, step
      else:
        progress.update(step)
      if manager.should_save(step) or step == tc.num_steps:
        _check_finite(state, manager)
        checkpoint.save(manager, step, state, meta, force=step == tc.num_steps)
        last_saved = step
      if tc.get("plot_every", 0) and step % tc.plot_every == 0 and step < tc.num_steps:
        _plot(run, workdir, sample(run, state["ema_params"], run.config.eval.plot_samples)[0], step)
    manager.wait_until_finished()
    progress.close()
    _check_finite(state, manager)
    return _evaluate(run, workdir, state, compile_s)
  finally:
    preempted.restore_handlers()
    manager.close()
    writer.close()


def _evaluate(run: Run, workdir: str, state, compile_s: float) -> dict:
  config = run.config
  step = int(state["step"])
  n = config.eval.num_samples
  t0 = time.perf_counter()
  x, stats = sample(run, state["ema_params"], n)
  x = jax.block_until_ready(x)
  sample_s = time.perf_counter() - t0
  summary = {"status": "done", "step": step, "num_samples": n, "sampler": config.sample.sampler,
             "sample_seconds": sample_s, "train_compile_s": compile_s,
             **{k: (float(v) if np.ndim(v) == 0 else v) for k, v in stats.items()}}
  eval_key = jax.random.fold_in(run.keys["eval"], step)
  if len(run.dataset.shape) == 1:
    summary.update(evaluation.sample_quality(eval_key, x, run.dataset))
  if hasattr(run.family, "evaluate"):  # family-specific metrics (held-out ELBO, mode coverage, ...)
    summary.update(run.family.evaluate(state["ema_params"], jax.random.fold_in(eval_key, 1), run.dataset))
  plot = _plot(run, workdir, x, step)
  if plot:
    summary["plot"] = plot
  if hasattr(run.family, "figures") and jax.process_index() == 0:  # e.g. latent grids
    summary["figures"] = run.family.figures(state["ema_params"], jax.random.fold_in(eval_key, 2),
                                            workdir, step)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "eval.json"), "w") as f:
      json.dump(summary, f, indent=2)
    logs.MetricWriter(workdir).write(step, {f"eval/{k}": v for k, v in summary.items()
                                            if isinstance(v, (int, float))}, event="eval")
  return summary
