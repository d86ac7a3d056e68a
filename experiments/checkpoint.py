"""Orbax checkpoints under WORKDIR/checkpoints/<step>/: periodic, preemption-safe, exact resume.

The saved items are the whole training state (step, params, optimizer state, EMA),
a small JSON `meta` and, for host-data runs (tfds + grain), the data iterator's
JSON state under `data`. Randomness is derived from (seed, step), so state plus
iterator state determine the rest of the run: a resumed run ends bit-identical
to an uninterrupted one.
"""

from __future__ import annotations

import os

import jax
from absl import logging
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as keep_lib
from orbax.checkpoint.checkpoint_managers import save_decision_policy as save_lib

from experiments import distributed


def make_manager(workdir: str, *, every: int, keep: int = 3, keep_every: int = 0,
                 async_save: bool = True) -> ocp.CheckpointManager:
  """A CheckpointManager saving every `every` steps (and on preemption).

  Keeps the latest `keep` checkpoints plus every multiple of `keep_every` (0: none).
  """
  save_policy = save_lib.AnySavePolicy([
      save_lib.FixedIntervalPolicy(every),
      save_lib.PreemptionCheckpointingPolicy(),
  ])
  keep_policies = [keep_lib.LatestN(keep)]
  if keep_every:
    keep_policies.append(keep_lib.EveryNSteps(keep_every))
  options = ocp.CheckpointManagerOptions(
      save_decision_policy=save_policy,
      preservation_policy=keep_lib.AnyPreservationPolicy(keep_policies),
      enable_async_checkpointing=async_save,
      create=True,
  )
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                               options=options)


def save(manager: ocp.CheckpointManager, step: int, state, meta: dict, *, force: bool = False,
         data_state: dict | None = None) -> bool:
  """Save state + meta (+ the data iterator's JSON state) as checkpoint `step`."""
  items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
  if data_state is not None:
    items["data"] = ocp.args.JsonSave(data_state)
  return manager.save(step, args=ocp.args.Composite(**items), force=force)


def restore_data_state(manager: ocp.CheckpointManager, step: int | None = None) -> dict | None:
  """The data iterator state saved with checkpoint `step` (default latest), or None."""
  step = manager.latest_step() if step is None else step
  if step is None:
    return None
  if "data" not in manager.item_metadata(step):
    return None
  return manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))["data"]


def restore(manager: ocp.CheckpointManager, abstract_state, step: int | None = None):
  """Restore (state, meta) at `step` (default latest).

  abstract_state: a pytree of jax.ShapeDtypeStruct (with shardings) or of arrays
  whose shapes, dtypes and shardings the restored state takes.
  """
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {manager.directory}")
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
  out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                      meta=ocp.args.JsonRestore()))
  return out["state"], out["meta"]


CORRUPT_PREFIX = "corrupt_"


class NoGoodCheckpointError(ValueError):
  """Every checkpoint of a non-empty checkpoint directory failed to restore."""


def move_aside(directory: str, step: int) -> str:
  """Rename checkpoint `step` to corrupt_<step> (never deleted; not a step for the manager)."""
  source = os.path.join(directory, str(step))
  target = os.path.join(directory, f"{CORRUPT_PREFIX}{step}")
  suffix = 1
  while os.path.exists(target):
    target = os.path.join(directory, f"{CORRUPT_PREFIX}{step}.{suffix}")
    suffix += 1
  os.rename(source, target)
  return target


def restore_latest_good(make_manager_fn, abstract_state, *, host_data: bool = False):
  """(manager, state, data_state, skipped) from the newest checkpoint that restores.

  Tries the latest step; if it fails to restore (a truncated file, an empty or
  half-copied step directory), logs why, moves the directory aside to
  checkpoints/corrupt_<step>/ and tries the next older one with a fresh manager.
  Returns state None when the directory holds no checkpoint at all; raises
  NoGoodCheckpointError when it held some and none restored (never a silent
  start from step 0). skipped lists (step, reason, moved_to).
  """
  manager, skipped = make_manager_fn(), []
  while (step := manager.latest_step()) is not None:
    try:
      state, _ = restore(manager, abstract_state, step)
      data_state = restore_data_state(manager, step) if host_data else None
      reason = None
    except Exception as e:  # orbax raises many types for damaged files  # noqa: BLE001
      reason = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
    # Every process restored its part, or all of them move on to the next older step.
    if distributed.all_ok(reason is None):
      for old, why, moved in skipped:
        logging.warning("checkpoint step %d could not be restored (%s); moved aside to %s; "
                        "resumed from step %d", old, why, moved, step)
      return manager, state, data_state, skipped
    reason = reason or "another process could not restore its part"
    directory = str(manager.directory)
    manager.close()
    moved = os.path.join(directory, f"{CORRUPT_PREFIX}{step}")
    if distributed.is_primary():
      moved = move_aside(directory, step)
    distributed.barrier(f"checkpoint_moved_aside_{step}")
    logging.warning("checkpoint step %d could not be restored (%s); moved aside to %s",
                    step, reason, moved)
    skipped.append((step, reason, moved))
    manager = make_manager_fn()
  if skipped:
    manager.close()
    steps = ", ".join(str(s) for s, _, _ in skipped)
    raise NoGoodCheckpointError(
        f"no checkpoint in {manager.directory} could be restored (steps {steps} moved aside to "
        f"{CORRUPT_PREFIX}<step>: {skipped[0][1]}); refusing to start from step 0 over them: "
        f"relaunch with --reset to start over")
  return manager, None, None, skipped
