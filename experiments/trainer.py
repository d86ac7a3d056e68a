"""The one training loop: every family plugs in init / loss / sample (families/protocol.py).

The trainer owns the optimizer (optax), the EMA, the jitted and sharded step,
orbax checkpoints, metrics.jsonl, the progress bar and the sample plots. The
workdir is the only state: relaunching the same command resumes from the last
complete checkpoint. Keys derive from (seed, step) -- data, noise and sampling
-- so a resumed run ends bit-identical to an uninterrupted one, and the global
batch (and so every loss) does not depend on the number of devices. The run
itself (dataset, family, optimizers, state layout, keys) is built by
experiments/run.py; the final evaluation is experiments/evaluation.py.

Several processes (jax.distributed, experiments/distributed.py) run this same loop on
one mesh over all their devices: process 0 holds the workdir lock and writes logs,
metrics, figures and progress; every process writes its part of each checkpoint; a
SIGTERM to any of them stops all of them at the same step.
"""

from __future__ import annotations

import contextlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import checkpoint, configuration, distributed, evaluation, logs, optim
from experiments import workdir as workdir_lib
from experiments import sharding as sharding_lib
# The run's pieces live in experiments/run.py; these names stay importable from here.
from experiments.families.protocol import Phase, SampleRequest  # noqa: F401
from experiments.run import (EVAL, INIT, SAMPLE, TRAIN, Run, build, current_step,  # noqa: F401
                             group_of, init_state, phases_of, replica_params, sample, seed_keys)


PREEMPTED_EXIT_STATUS = workdir_lib.PREEMPTED_EXIT_STATUS


class NonFiniteLossError(FloatingPointError):
  """Raised when the loss stops being finite; the last good checkpoint is kept."""


def update_keys(train_key: jax.Array, step, draw) -> tuple[jax.Array, jax.Array]:
  """(data_key, loss_key) of update number `draw` (0-based within the step) at `step`."""
  return tuple(jax.random.split(jax.random.fold_in(jax.random.fold_in(train_key, step), draw)))


def draws_per_step(run: Run) -> int:
  """Batches one train step consumes (the sum of every phase's repeats)."""
  return sum(p.repeats for p in run.phases)


def make_train_step(run: Run):
  """jit(state, key[, batches]) -> (state, metrics): one train step (every phase, every repeat).

  Update d of step s draws its batch from data(fold_in(fold_in(key, s), d)) and its
  loss noise from the same key, so the run is a function of (seed, step); every phase's
  loss is called as loss(params, batch, key, step) with the int32 step s. With a
  host-data set (tfds + grain) the batches come in instead, as a dict of arrays
  {"x", "y"} with a leading axis of draws_per_step(run), laid out over "data" on
  their batch axis; the loss noise still comes from the key. Conditional families
  get (x, labels) batches. The state is donated. After the updates,
  family.after_step(params, step) (if defined) may refresh frozen groups (e.g. an
  EMA target network); then the evaluation EMA is updated. With num_seeds > 1 the
  step is vmapped over the replica axis of state and key (one compile for all
  replicas; host batches are shared by the replicas).
  """
  config, family, phases = run.config, run.family, run.phases
  batch_size, decay = config.train.batch_size, config.ema_decay
  batch_layout = sharding_lib.batch_sharding(run.mesh)
  schedule = optim.learning_rate(config.optim, config.train.num_steps)
  offsets = [sum(p.repeats for p in phases[:i]) for i in range(len(phases))]
  conditional = run.conditional

  def get_batch(batches, data_key, draw):
    if batches is None:
      if conditional:
        x, y = run.dataset.sample_labeled(data_key, batch_size)
        return (jax.lax.with_sharding_constraint(x, batch_layout),
                jax.lax.with_sharding_constraint(y, batch_layout))
      return jax.lax.with_sharding_constraint(run.dataset.sample(data_key, batch_size),
                                              batch_layout)
    x, y = batches["x"][draw], batches["y"][draw]
    return (x, y) if conditional else x

  def step_fn(state, key, batches):
    step = state["step"]
    params, opt_states, metrics, losses = state["params"], dict(state["opt_state"]), {}, []
    for phase, offset in zip(phases, offsets):
      tx = run.optimizers[phase.name]

      def update(carry, r, phase=phase, offset=offset, tx=tx):
        params, opt_state = carry
        data_key, loss_key = update_keys(key, step, offset + r)
        batch = get_batch(batches, data_key, offset + r)

        def loss_fn(trained):
          full = trained if phase.group is None else {**params, phase.group: trained}
          return phase.loss(full, batch, loss_key, step)

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(group_of(params, phase.group))
        updates, opt_state = tx.update(grads, opt_state, group_of(params, phase.group))
        trained = optax.apply_updates(group_of(params, phase.group), updates)
        if phase.project is not None:
          trained = phase.project(trained)
        params = trained if phase.group is None else {**params, phase.group: trained}
        return (params, opt_state), {**aux, "loss": loss, "grad_norm": optax.tree.norm(grads)}

      # A Python loop, not lax.scan: XLA:CPU runs convolution gradients inside a while
      # loop much slower; repeats are small (<= ~5).
      carry, outs = (params, opt_states[phase.name]), []
      for r in range(phase.repeats):
        carry, out = update(carry, r)
        outs.append(out)
      params, opt_states[phase.name] = carry
      last = outs[-1]
      losses.append(jnp.stack([o["loss"] for o in outs]))
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

  if run.num_seeds > 1:
    step_fn = jax.vmap(step_fn, in_axes=(0, 0, None))
  replicated = sharding_lib.replicated(run.mesh)
  if run.host_data:
    return jax.jit(step_fn, in_shardings=(run.state_shardings, replicated,
                                          host_batch_sharding(run.mesh)),
                   out_shardings=(run.state_shardings, replicated), donate_argnums=0)
  return jax.jit(lambda state, key: step_fn(state, key, None),
                 in_shardings=(run.state_shardings, replicated),
                 out_shardings=(run.state_shardings, replicated), donate_argnums=0)


def host_batch_sharding(mesh):
  """(draws, batch, ...) host batches: the batch axis split over "data"."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, sharding_lib.DATA_AXIS))


def global_batches(run: Run, local: dict) -> dict:
  """Assemble this process's slice of every host batch into global jax Arrays."""
  sharding = host_batch_sharding(run.mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}


def data_iterator(run: Run, state: dict | None = None):
  """The host-data iterator of the run (None for in-memory data), resumed from `state`."""
  if not run.host_data:
    return None
  return run.dataset.train_iterator(
      seed=run.config.seed, batch_size=run.config.train.batch_size,
      draws_per_step=draws_per_step(run), process_index=jax.process_index(),
      process_count=jax.process_count(), state=state)


def restore_or_init(run: Run, make_manager_fn):
  """(manager, state, resumed, data_state): the newest checkpoint that restores, or a fresh state.

  Damaged checkpoints are moved aside to checkpoints/corrupt_<step>/ and the next
  older one is tried (checkpoint.restore_latest_good); if there were checkpoints and
  none restores, NoGoodCheckpointError (a ValueError) refuses to start from step 0.
  """
  manager, state, data_state, _ = checkpoint.restore_latest_good(
      make_manager_fn, run.abstract_state, host_data=run.host_data)
  if state is not None:
    return manager, state, True, data_state
  return manager, init_state(run), False, None


def _check_finite(state, manager) -> None:
  first = np.asarray(jax.device_get(state["first_nonfinite"])).reshape(-1)
  if np.any(first >= 0):
    replica = int(np.argmax(first >= 0))
    where = f" (replica {replica})" if first.size > 1 else ""
    manager.wait_until_finished()  # a pending async save counts once it is complete
    last = manager.latest_step()
    kept = (f"the last good checkpoint (step {last}) is kept in {manager.directory}"
            if last is not None else f"no checkpoint had been written yet in {manager.directory}")
    raise NonFiniteLossError(
        f"non-finite loss at step {int(first[replica])}{where}; training stopped and {kept}")


def train_and_evaluate(config, workdir: str, *, reset: bool = False) -> dict:
  """Train (resuming from the workdir if it holds checkpoints), then evaluate the EMA params.

  Returns a summary dict (also written to WORKDIR/eval.json). If SIGTERM or SIGINT
  arrives, saves a checkpoint and returns {"status": "preempted", ...} without
  evaluating. With config.num_seeds = n > 1, n replicas (seeds config.seed + i) train
  in one vmapped step; every scalar metric is reported as the mean over replicas, with
  `<metric>_std` and the per-replica values under "per_seed".

  The workdir is guarded (experiments/workdir.py): the process holds its lock for
  the whole run (a second launch fails at once, naming the holder's pid); a
  relaunch whose config differs from config.json in anything but RESUMABLE fields is
  refused before a file is written; reset=True deletes the run's files first (the
  way to start over). A finished run only re-evaluates (no train step is compiled).
  """
  run = build(config)  # raises ValueError on a bad config before anything compiles
  workdir_lib.check_usable(workdir)
  with _guard_workdir(config, workdir, reset) as changes:
    return _train_locked(run, config, workdir, changes)


@contextlib.contextmanager
def _guard_workdir(config, workdir: str, reset: bool):
  """Process 0 takes the workdir lock, resets and checks config drift; every process
  learns whether that worked before any of them touches the workdir (all of them stop
  if it did not: process 0 with the reason, the others pointing at it)."""
  lock, changes, error = workdir_lib.WorkdirLock(workdir), {}, None
  if distributed.is_primary():
    try:
      lock.acquire()
      if reset:
        workdir_lib.reset(workdir)
      changes = workdir_lib.check_config_drift(workdir, configuration.as_dict(config))
    except BaseException as e:
      error = e
  ok = distributed.all_ok(error is None)
  try:
    if error is not None:
      raise error
    if not ok:
      raise workdir_lib.WorkdirError(f"process 0 refused the workdir {workdir} (its error "
                                     f"says why); nothing was written")
    yield changes
  finally:
    if distributed.is_primary():
      lock.release()


def _train_locked(run: Run, config, workdir: str, changes: dict) -> dict:
  tc = config.train
  make_manager = lambda: checkpoint.make_manager(  # noqa: E731
      workdir, every=tc.checkpoint_every, keep=tc.get("keep", 3),
      keep_every=tc.get("keep_every", 0), async_save=tc.get("async_checkpoint", True))
  preempted = distributed.Preemption()
  manager, data, writer = None, None, None
  try:
    manager, state, resumed, data_state = restore_or_init(run, make_manager)
    step = current_step(state)
    configuration.save_json(config, workdir)
    if jax.process_index() == 0:
      workdir_lib.record_history(workdir, "resume" if resumed else "start", changes, step)
    writer = logs.MetricWriter(workdir, tensorboard=config.get("log", {}).get("tensorboard", False))
    writer.resume(step)  # rows past the restored step (a killed run's) go; a torn line goes
    if step >= tc.num_steps:  # finished: evaluate only, nothing to compile
      _check_finite(state, manager)
      return evaluation.evaluate_run(run, workdir, state, None)
    data = data_iterator(run, data_state)
    t0 = time.perf_counter()
    args = (state, run.keys["train"])
    if data is not None:
      args += (jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
                            _host_batch_spec(run)),)
    train_step = make_train_step(run).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    meta = {"family": config.family, "data": config.data.name, "num_seeds": run.num_seeds}
    writer.write(step, {}, event="resume" if resumed else "start", compile_s=compile_s,
                 num_devices=int(run.mesh.devices.size))
    progress = logs.Progress(step, tc.num_steps, enabled=config.get("log", {}).get("progress", True))
    pending, t_window, s_window = [], time.perf_counter(), step
    sync_each_step = distributed.sync_each_step()
    last_saved = manager.latest_step()

    def save(force):
      checkpoint.save(manager, step, state, meta, force=force,
                      data_state=None if data is None else data.get_state())

    while step < tc.num_steps:
      if preempted.reached(step):
        _check_finite(state, manager)
        if last_saved != step:
          save(force=True)
        manager.wait_until_finished()
        progress.close()
        writer.write(step, {}, event="preempted")
        return {"status": "preempted", "step": step}
      if data is None:
        state, metrics = train_step(state, run.keys["train"])
      else:
        state, metrics = train_step(state, run.keys["train"], global_batches(run, next(data)))
      step += 1
      if sync_each_step:
        jax.block_until_ready(metrics)
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
        save(force=step == tc.num_steps)
        last_saved = step
      if tc.get("plot_every", 0) and step % tc.plot_every == 0 and step < tc.num_steps:
        params = distributed.host_local(replica_params(run, state["ema_params"], 0))
        if distributed.is_primary():
          evaluation.plot_samples(run, workdir,
                                  sample(run, params, run.config.eval.plot_samples)[0], step)
    manager.wait_until_finished()
    progress.close()
    _check_finite(state, manager)
    return evaluation.evaluate_run(run, workdir, state, compile_s)
  finally:
    preempted.restore_handlers()
    if data is not None and hasattr(data, "close"):
      data.close()  # stops the host pipeline's threads
    if manager is not None:
      manager.close()
    if writer is not None:
      writer.close()


def _host_batch_spec(run: Run) -> dict:
  """Abstract global host batches {"x", "y"} for lowering the train step."""
  sharding = host_batch_sharding(run.mesh)
  lead = (draws_per_step(run), run.config.train.batch_size)
  return {"x": jax.ShapeDtypeStruct(lead + tuple(run.dataset.shape), jnp.float32, sharding=sharding),
          "y": jax.ShapeDtypeStruct(lead, jnp.int32, sharding=sharding)}
