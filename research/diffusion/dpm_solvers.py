"""Exponential-integrator ODE samplers: DPM-Solver, DPM-Solver++ and UniPC.

Time convention (schedules.py): continuous t in [0, 1], t = 1 is noise,
x_t = alpha(t) x0 + sigma(t) eps, lambda(t) = log(alpha/sigma). The samplers
integrate the probability-flow ODE in lambda with its linear part exact
(formulas: dpm_coefs.py; the scan that runs them: dpm_engine.py).

Steps: the StepGrid of research/diffusion/grid.py, N model evaluations at
t_0 = 1 > ... > t_{N-1} = t_end, then (final_step_to_zero=True, the default) the
first-order data step x = x0_pred(x_{N-1}, t_{N-1}) to clean data. Default
grid: time-quadratic steps ending at t_end = max(t_min, (1.5/N)^2) (grid.py;
the measurements behind the choice are in docs/samplers.md). Every sampler also
takes `timesteps=` (e.g. the model-calibrated grid of research.diffusion.steps)
or a prebuilt `grid=`.

NFE: multistep methods and UniPC N; singlestep DPM-Solver-k k (N - 1) + 1
with the final step to zero, k N without it.
"""
from __future__ import annotations

from research import registry
from research.diffusion import adapters
from research.diffusion import grid as grid_lib
from research.diffusion.contract import register
from research.diffusion.dpm_coefs import (dpm_solver_multistep_coefs, dpm_solver_pp_coefs, geometry,
                                          phi, unipc_coefs)
from research.diffusion.dpm_engine import (LOWER_ORDER_FINAL_MAX_STEPS, assemble, empty_coefs,
                                           n_ode_steps, order_schedule, run_multistep,
                                           singlestep)

__all__ = [
    "phi",
    "order_schedule",
    "dpm_solver",
    "dpm_solver_nfe",
    "dpm_solver_pp",
    "dpm_solver_pp_nfe",
    "unipc",
    "unipc_nfe",
    "LOWER_ORDER_FINAL_MAX_STEPS",
]

MAX_ORDER = 3
METHODS = ("multistep", "singlestep")

SOLVER_TYPE = registry.choice("solver_type", "midpoint", ("midpoint", "taylor"),
                              "form of the second-order term (Lu et al. 2022b)")
LOWER_ORDER_FINAL = registry.flag("lower_order_final", True,
                                  f"lower orders in the last steps when N < {LOWER_ORDER_FINAL_MAX_STEPS}")
_ORDERS = tuple(range(1, MAX_ORDER + 1))
_GRID = grid_lib.GridRule(grid_lib.DEFAULT_SPACING)


def _order(default):
  return registry.integer("order", default, allowed=_ORDERS, doc="solver order")


def _multistep(grid, num_steps, order, lower_order_final, coefs_fn, *args):
  """(px, pm, pz or cm) of the ODE steps of a multistep method on `grid`."""
  n_ode = n_ode_steps(grid)
  orders = order_schedule(num_steps, order, lower_order_final=lower_order_final,
                          final_step_to_zero=grid.final_step_to_zero)[:n_ode]
  if n_ode > 0:
    return coefs_fn(geometry(grid, n_ode), orders, *args)
  return empty_coefs(grid)


# ----------------------------------------------------------------------------
# DPM-Solver (noise prediction).
# ----------------------------------------------------------------------------
def dpm_solver_nfe(num_steps, *, order=3, method="multistep", final_step_to_zero=True,
                   **options):
  """NFE of dpm_solver: N (multistep); order (N - 1) + 1 or order N (singlestep)."""
  del options
  n = grid_lib.check_num_steps(num_steps)
  order = registry.check_int("order", order, allowed=_ORDERS)
  method = registry.check_choice("method", method, METHODS)
  if method == "multistep":
    return n
  return order * (n - 1) + 1 if final_step_to_zero else order * n


@register("dpm_solver", nfe=dpm_solver_nfe, grid=_GRID,
          options=(adapters.PREDICTION, _order(3),
                   registry.choice("method", "multistep", METHODS,
                                   "multistep (1 NFE per step) or singlestep (order NFE per step)"),
                   SOLVER_TYPE, LOWER_ORDER_FINAL) + grid_lib.GRID_OPTIONS)
def dpm_solver(key, model_fn, x_T, schedule, *, num_steps, grid, prediction, order, method,
               solver_type, lower_order_final):
  """DPM-Solver in noise prediction, orders 1-3, singlestep or multistep (Lu et al. 2022).

  Exponential integrator of the PF-ODE in lambda: x_{i+1} = alpha_{i+1}/alpha_i x_i
  - sigma_{i+1} int_0^h e^u eps du with eps expanded to order k-1 (formulas in
  `dpm_coefs.dpm_solver_multistep_coefs` and `dpm_engine.singlestep`). "singlestep"
  (DPM-Solver-2/3, intermediate evaluations at r = 1/2 and r = 1/3, 2/3) costs
  `order` evaluations per step; "multistep" (Lu et al. 2022b) reuses earlier
  outputs, one evaluation per step. Order 1 is DDIM (eta = 0). key is ignored.
  """
  del key
  if method == "singlestep":
    return singlestep(model_fn, x_T, schedule, grid, order, prediction)
  px, pm, pz = _multistep(grid, num_steps, order, lower_order_final,
                          dpm_solver_multistep_coefs, solver_type)
  coefs = assemble(grid, num_steps, px, pm, pz, None, "eps", False)
  return run_multistep(None, model_fn, x_T, grid, coefs, prediction, "eps", stochastic=False)


# ----------------------------------------------------------------------------
# DPM-Solver++ (data prediction), ODE and SDE.
# ----------------------------------------------------------------------------
def dpm_solver_pp_nfe(num_steps, *, order=2, **options):
  """NFE of dpm_solver++: one evaluation per step."""
  del options
  registry.check_int("order", order, allowed=_ORDERS)
  return grid_lib.check_num_steps(num_steps)


@register("dpm_solver++", nfe=dpm_solver_pp_nfe, grid=_GRID,
          stochastic=lambda sde, **_: sde,
          options=(adapters.PREDICTION, _order(2),
                   registry.flag("sde", False, "SDE-DPM-Solver++ (eta = 1): samples, not the ODE map"),
                   SOLVER_TYPE, LOWER_ORDER_FINAL) + grid_lib.GRID_OPTIONS)
def dpm_solver_pp(key, model_fn, x_T, schedule, *, num_steps, grid, prediction, order, sde,
                  solver_type, lower_order_final):
  """DPM-Solver++ multistep in data prediction: 2M, 3M, and SDE-DPM-Solver++ (Lu et al. 2022b).

  ODE 2M (docs/math.md): r = h_{i-1}/h, D = (1 + 1/(2r)) x0_i - 1/(2r) x0_{i-1},
  x_{i+1} = (sigma_{i+1}/sigma_i) x_i - alpha_{i+1} expm1(-h) D; 3M adds the
  second difference (`dpm_coefs.dpm_solver_pp_coefs`). sde=True integrates the
  diffusion SDE instead (eta = 1: x_{i+1} = sigma_{i+1}/sigma_i e^{-h} x_i +
  alpha_{i+1}(1 - e^{-2h}) D + sigma_{i+1} sqrt(1 - e^{-2h}) z, per-example noise
  from key); it samples the data distribution, not the ODE map. order = 1 is
  DDIM in data form. One evaluation per step.
  """
  del schedule
  px, pm, pz = _multistep(grid, num_steps, order, lower_order_final, dpm_solver_pp_coefs,
                          solver_type, 1.0 if sde else 0.0)
  coefs = assemble(grid, num_steps, px, pm, pz, None, "x0", False)
  return run_multistep(key, model_fn, x_T, grid, coefs, prediction, "x0", stochastic=sde)


# ----------------------------------------------------------------------------
# UniPC.
# ----------------------------------------------------------------------------
def unipc_nfe(num_steps, *, order=3, **options):
  """NFE of unipc: one evaluation per step (the corrector reuses it)."""
  return dpm_solver_pp_nfe(num_steps, order=order, **options)


@register("unipc", nfe=unipc_nfe, grid=_GRID,
          options=(adapters.PREDICTION, _order(3),
                   registry.choice("variant", "bh2", ("bh1", "bh2"), "B(h) = -h (bh1) or expm1(-h)"),
                   registry.flag("use_corrector", True, "apply the UniC corrector"),
                   registry.flag("corrected_final", True, "apply the last correction to the final step"),
                   LOWER_ORDER_FINAL) + grid_lib.GRID_OPTIONS)
def unipc(key, model_fn, x_T, schedule, *, num_steps, grid, prediction, order, variant,
          use_corrector, corrected_final, lower_order_final):
  """UniPC: unified predictor-corrector, data prediction (Zhao et al. 2023).

  Predictor UniP-p and corrector UniC-p with B(h) = expm1(-h) ("bh2") or -h
  ("bh1"); formulas in `dpm_coefs.unipc_coefs`. The corrector reuses the
  evaluation at the predicted point, so NFE = num_steps; it is skipped after the
  final step (no evaluation there). corrected_final: the final step to clean data
  applies the last correction through x0 = x0_pred(x) + (x_c - x)/alpha_end (the
  data step written in eps form, first order in the correction); otherwise it
  returns x0_pred(x) at the uncorrected point as diffusers does. key is ignored.
  """
  del key, schedule
  n_ode = n_ode_steps(grid)
  if n_ode > 0:
    px, pm, cm = _multistep(grid, num_steps, order, lower_order_final, unipc_coefs, variant,
                            use_corrector)
  else:
    (px, pm, _), cm = empty_coefs(grid), None
  pz = 0.0 * px
  coefs = assemble(grid, num_steps, px, pm, pz, cm, "x0", corrected_final and use_corrector)
  return run_multistep(None, model_fn, x_T, grid, coefs, prediction, "x0", stochastic=False)
