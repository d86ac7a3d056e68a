"""Diffusion at paper scale: DDPM (Ho et al. 2020), improved DDPM (Nichol & Dhariwal 2021)
and an EDM-style VE model (Karras et al. 2022) on CIFAR-10 (or mnist / fashion_mnist / celeb_a).

Usage: --config=configs/ddpm_cifar10.py:paper=ddpm,dataset=cifar10[,runlocal=true]
       (data through tfds + grain: config.data.data_dir may point at prepared tfds data)

paper=ddpm:  linear betas 1e-4..0.02, T = 1000, eps-prediction, L_simple; U-Net
             128 ch x (1, 2, 2, 2), 2 res blocks, attention at 16x16, dropout 0.1;
             Adam 2e-4, 5000 warmup steps, batch 128, 800k steps, grad clip 1,
             EMA 0.9999, random horizontal flips left out (see README); sampled with
             the 1000-step ancestral sampler.
paper=iddpm: cosine schedule, 3 res blocks, attention at 16 and 8, 4 heads, dropout 0.3,
             Adam 1e-4, batch 128, 500k steps. (Learned variances / the hybrid loss are
             not implemented: eps-prediction with L_simple; sampled with DPM-Solver++ 50.)
paper=edm:   VE noise 0.002..80 with EDM's input scaling, x0-prediction (EDM's
             c_skip/c_out preconditioning and log-normal sigma sampling are not in the
             diffusion family: it samples t uniformly), Adam 1e-3, batch 512, 200k steps
             (EDM trains on 200 Mimg), EMA 0.9999; Heun with 18 steps (35 NFE).
celeb_a uses 64x64 crops and one more U-Net level; the 28x28 sets one fewer.
runlocal=true: a tiny U-Net for two steps (the tests run it on mocked data, 8 fake devices).
"""

from configs import images
from configs.common import parse_arg
import ml_collections

PAPERS = ("ddpm", "iddpm", "edm")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, paper="ddpm", dataset="cifar10", cond=False, runlocal=False)
  if a.paper not in PAPERS:
    raise ValueError(f"config argument paper must be one of {PAPERS}, got {a.paper!r}")
  if a.dataset not in ("cifar10", "mnist", "fashion_mnist", "celeb_a"):
    raise ValueError(f"config argument dataset must be cifar10 | mnist | fashion_mnist | "
                     f"celeb_a, got {a.dataset!r}")
  c = images.paper_config("diffusion", a.dataset)
  num_classes = 10 if a.cond else 0
  c.diffusion = ml_collections.ConfigDict({
      "schedule": "linear", "num_train_steps": 1000, "prediction": "eps", "weighting": "none",
      "t_sampler": "uniform", "min_snr_gamma": 5.0})
  c.sample = ml_collections.ConfigDict({"sampler": "ddpm", "num_steps": 1000,
                                        "guidance_scale": 1.0,
                                        # Ho et al.'s and Nichol & Dhariwal's samplers clip
                                        # x0 to [-1, 1] (clip_denoised); EDM does not
                                        "clip_x0": "static" if a.paper != "edm" else "none",
                                        "options": ""})
  c.train.batch_size = 128
  # linear warmup, then constant, as in the papers
  c.optim.update(lr=2e-4, schedule="constant", warmup_steps=5000, grad_clip=1.0)
  c.ema_decay = 0.9999
  if a.paper == "ddpm":
    c.model = images.paper_unet(a.dataset, dropout=0.1, num_classes=num_classes)
    c.train.num_steps = 800_000
  elif a.paper == "iddpm":
    c.model = images.paper_unet(a.dataset, num_res_blocks=3, num_heads=4, dropout=0.3,
                                num_classes=num_classes)
    c.model.attention_resolutions = (16, 8) if images.SHAPES[a.dataset][0] != 28 else (14, 7)
    c.diffusion.schedule = "cosine"
    c.sample.sampler, c.sample.num_steps = "dpm_solver++", 50
    c.optim.lr = 1e-4
    c.train.num_steps = 500_000
  else:
    c.model = images.paper_unet(a.dataset, dropout=0.13, num_classes=num_classes)
    c.diffusion.schedule, c.diffusion.prediction, c.diffusion.t_sampler = "ve", "x0", "continuous"
    c.sample.sampler, c.sample.num_steps = "heun", 18
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 10_000
    c.train.batch_size = 512
    c.train.num_steps = 200_000
  if a.runlocal:
    images.shrink_for_runlocal(c)
  return c
