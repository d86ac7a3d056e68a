"""Benchmark: samplers on trained networks — FD / precision / recall / class accuracy against NFE,
ours vs diffusers' schedulers driving the PyTorch twin of the same U-Net
(experiments/benchmarks/trained_samplers.py).

    python -m launch.benchmark --config=configs/bench_trained_samplers.py --out=workdirs/bench_trained_samplers
    python -m launch.benchmark --config=configs/bench_trained_samplers.py:quick=true,workdir=W

Arguments: workdir (a trained diffusion workdir; default the class-conditional digits DDPM),
latent_workdir (its latent twin, '' for none; measured only if trained), samples, batch,
nfe ('5;10;20;50'), samplers (';'-separated labels of SAMPLERS, or registry names),
guidance (CFG scale w; < 0: the workdir's config.sample.guidance_scale), clip (x0 clipping:
'config' = the workdir's, none, static, dynamic), spacing (diffusers' timestep_spacing; 'default': each
scheduler's own, DDIM leading, the others linspace),
calibrate (the calibrated grid for CALIBRATE; quick: dpm_solver++), calibrate_nfe ('5;10'), diffusers (false: ours
only), torch_threads, seed, verbose, compile_only (fill a persistent compilation cache), quick (20 samples, NFE 2 and 4, dpm_solver++ and ddim, a tiny
calibration: for tests).
"""

import ml_collections

from configs.common import parse_arg

# (label, registry name, options, diffusers scheduler label). Names that are presets not yet
# in the registry run as experiments.benchmarks.trained_samplers.FALLBACKS says (or are skipped).
SAMPLERS = (
    ("dpm_solver++", "dpm_solver++", "", "DPM++ 2M"),        # 2M, our default grid
    ("dpmpp_2m", "dpmpp_2m", "", "DPM++ 2M"),                # the diffusers-named preset
    ("dpmpp_2m_karras", "dpmpp_2m_karras", "", "DPM++ 2M Karras"),
    ("unipc", "unipc", "", "UniPC"),
    ("ddim", "ddim", "", "DDIM"),
    ("euler", "euler", "", "Euler"),
    ("euler_a", "euler_a", "", "Euler a"),
    ("heun", "heun", "", "Heun"),
)
CALIBRATE = ("unipc",)


def _ints(text, name):
  try:
    return tuple(int(v) for v in text.replace(" ", ";").split(";") if v)
  except ValueError:
    raise ValueError(f"config argument {name} must be ';'-separated integers, got {text!r}") from None


def _samplers(text):
  if not text:
    return SAMPLERS
  table = {s[0]: s for s in SAMPLERS}
  return tuple(table.get(name, (name, name, "", "")) for name in text.split(";") if name)


def _defaults(quick: bool) -> dict:
  return dict(quick=quick, workdir="workdirs/ddpm_digits_cond",
              latent_workdir="" if quick else "workdirs/ldm_digits_cond",
              samples=20 if quick else 500, batch=20 if quick else 500,
              nfe="2;4" if quick else "5;10;20;50",
              samplers="dpm_solver++;ddim" if quick else "", guidance=-1.0, clip="config",
              spacing="default", calibrate=True, calibrate_nfe="4" if quick else "5;10",
              diffusers=True, torch_threads=1, seed=0, verbose=True, compile_only=False)


def get_config(arg=None):
  # Parsed twice: quick=true changes the defaults of the other arguments.
  a = parse_arg(arg, **_defaults(parse_arg(arg, **_defaults(False)).quick))
  quick = a.quick
  return ml_collections.ConfigDict({
      "benchmark": "trained_samplers",
      "name": "trained_samplers_quick" if quick else "trained_samplers",
      "workdir": a.workdir,
      "latent_workdir": a.latent_workdir,
      "num_samples": a.samples,
      "batch_size": a.batch,
      "nfe": _ints(a.nfe, "nfe"),
      "samplers": _samplers(a.samplers),
      "calibrate": (("dpm_solver++",) if quick else CALIBRATE) if a.calibrate else (),
      "calibrate_nfe": _ints(a.calibrate_nfe, "calibrate_nfe"),
      # calibrate_timesteps settings (research/diffusion/steps.py); the noise key is apart from
      # the evaluation noise (key `seed`).
      "calibration": {
          "seed": 1234,
          "num_samples": 32 if quick else 128,
          "num_focus": 8 if quick else 16,
          "batch_size": 8 if quick else 32,
          "num_iters": 3 if quick else 20,
          "reference_steps": 8 if quick else 50,
          "init": ("time_uniform",) if quick else ("time_uniform", "logsnr_uniform"),
      },
      "guidance_scale": a.guidance,
      "clip_x0": a.clip,
      "diffusers_spacing": a.spacing,
      "with_diffusers": a.diffusers,
      # torch's intra-op threads (0: all cores). 1 by default: on this shared 2-core CPU two
      # OpenMP threads spin against the other jobs (80x slower per U-Net call at load ~14).
      "torch_threads": a.torch_threads,
      "seed": a.seed,
      "verbose": a.verbose,
      # Only compile our fixed-grid programs (params are an argument, so the programs depend on
      # shapes only): run once with JAX_COMPILATION_CACHE_DIR set to fill the persistent cache.
      "compile_only": a.compile_only,
  })
