"""The paper-figure gallery: NAME -> module with run(out_dir, *, quick) -> summary dict.

Every module writes out_dir/NAME.png and out_dir/NAME.json (the plotted data, through
experiments.figures.common.write_outputs); figures that need trained models cache them
under out_dir/_work/NAME[_quick] (experiments.figures.common.train_cached). The figures
run through `python -m launch.figures` only: `--list` prints the names below with their
descriptions, `NAME [--quick] [--out=DIR]` regenerates one (`output_dir` says where).
"""

from __future__ import annotations

import importlib

GALLERY = "figures"                  # the committed gallery (README.md's images)
QUICK_OUT = "workdirs/figures_quick"  # --quick previews: never over the gallery

# NAME -> (module under experiments.figures, one-line description), in gallery order.
FIGURES: dict[str, tuple[str, str]] = {
    "primitives": ("primitives", "Box-Muller vs N(0,1); temperature, top-k, top-p on the "
                                 "example logits of docs/math.md; Gumbel-softmax for several tau"),
    "gradient_variance": ("gradient_variance", "reparameterised vs score-function gradient "
                                               "variance as the number of samples n grows"),
    "forward_diffusion": ("forward_diffusion", "marginals of x_t at t = 0, 250, 500, 750, 999 "
                                               "(linear betas) for 1-D mixture data vs the exact "
                                               "density"),
    "sampler_error_vs_nfe": ("sampler_error_vs_nfe", "error vs NFE of every deterministic "
                                                     "sampler against the exact PF-ODE map of an "
                                                     "analytic mixture"),
    "flow_vs_ddpm": ("flow_vs_ddpm", "flow matching vs DDPM trained on moons: W2 and energy "
                                     "distance vs number of sampling steps"),
    "gan_coverage": ("gan_coverage", "non-saturating GAN vs WGAN-GP mode coverage on ring8 and "
                                     "grid25 over training"),
    "beta_vae": ("beta_vae", "beta-VAE on digits: 2-D latent space and decoded grid for "
                             "several beta"),
    "cfg_sweep": ("cfg_sweep", "classifier-free guidance scale sweep on class-conditional "
                               "digits DDPM: intra-class diversity vs class accuracy"),
    "consistency_vs_teacher": ("consistency_vs_teacher", "consistency models (iCT, CD) at 1 and "
                                                         "2 steps vs their diffusion teacher at "
                                                         "several NFE"),
    "langevin": ("langevin", "annealed Langevin dynamics trajectories on a 2-D mixture's exact "
                             "score"),
    "ar_sampling": ("ar_sampling", "temperature and top-p sweep of the class-conditional "
                                   "autoregressive digits model: diversity vs class accuracy"),
    "ar_samples": ("ar_samples", "autoregressive digits samples per class at T = 1 beside "
                                 "held-out digits, and unconditional samples"),
    "flow_densities": ("flow_densities", "normalizing-flow densities (RealNVP, Glow, spline, "
                                         "MAF) on ring8 and grid25 beside the exact density, "
                                         "with held-out KL"),
}


def names() -> tuple[str, ...]:
  """The registered figure names, in gallery order."""
  return tuple(FIGURES)


def describe(name: str) -> str:
  """The one-line description of figure `name`."""
  _check(name)
  return FIGURES[name][1]


def _check(name: str) -> None:
  if name not in FIGURES:
    raise ValueError(f"unknown figure name={name!r}; valid names: {', '.join(FIGURES)}")


def get(name: str):
  """The module of figure `name` (it has run(out_dir, *, quick) -> dict)."""
  _check(name)
  return importlib.import_module(f"experiments.figures.{FIGURES[name][0]}")


def output_dir(out: str | None = None, *, quick: bool = False, workdir: str | None = None) -> str:
  """Where launch.figures writes: `out` when given; else the evaluated run's `workdir`
  (cfg_sweep --workdir); else QUICK_OUT with --quick (quick figures never replace the
  gallery's images) and GALLERY without."""
  if out is not None and not isinstance(out, str):
    raise ValueError(f"out must be a directory path or None, got {out!r}")
  if out:
    return out
  if workdir:
    return workdir
  return QUICK_OUT if quick else GALLERY


def run(name: str, out_dir: str = "figures", *, quick: bool = False) -> dict:
  """Regenerate figure `name` into out_dir/NAME.{png,json}; returns its summary."""
  return get(name).run(out_dir, quick=quick)
