"""Named sampler presets: a registered sampler with the option defaults practitioners know by name.

Time convention (schedules.py): continuous t in [0, 1], t = 1 is noise, t = 0 is
clean data; discrete schedules have t_n = (n + 1)/T (the network sees n).

Each preset is `contract.register_preset(name, base, doc, **defaults)`: the base
sampler's registry entry with other defaults, so every option stays overridable and
`samplers.NAMES`, `spec`, `nfe`, `parse_options`, `grid_for` treat it as any sampler.
The presets reproduce diffusers' schedulers with their default configuration (on a
discrete VP schedule, eps/x0/v models; the mapping and the measured agreement are in
docs/diffusers.md):

* `dpmpp_2m`        DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2):
                    DPM-Solver++(2M) (Lu et al. 2022b), midpoint form, lower_order_final,
                    final_sigmas_type="zero", timestep_spacing="linspace" (the first N
                    indices of round(linspace(0, T - 1, N + 1))[::-1]).
* `dpmpp_2m_karras` the same with use_karras_sigmas=True: the solver steps on the N
                    Karras levels (Karras et al. 2022, rho = 7) between s(1) and
                    s(t_min), the model is called at their rounded DDPM indices.
* `euler_a`         EulerAncestralDiscreteScheduler: ancestral Euler in the VE form
                    (eta = 1) on diffusers' "linspace" indices linspace(0, T - 1, N)
                    (fractional, not rounded).

`lcm` (LCMScheduler) is a sampler of its own (lcm.py); `ddim` and `unipc` keep their
own defaults and equal DDIMScheduler / UniPCMultistepScheduler with the options
listed in docs/diffusers.md.
"""
from __future__ import annotations

from research.diffusion import dpm_solvers, karras  # noqa: F401  (the base samplers)
from research.diffusion.contract import PRESETS, register_preset

__all__ = ["PRESETS", "dpmpp_2m", "dpmpp_2m_karras", "euler_a"]

dpmpp_2m = register_preset(
    "dpmpp_2m", "dpm_solver++",
    "DPM-Solver++(2M) on diffusers' DPMSolverMultistepScheduler grid (Lu et al. 2022b).",
    order=2, solver_type="midpoint", lower_order_final=True, final_step_to_zero=True,
    spacing="linspace", index_rule="multistep")

dpmpp_2m_karras = register_preset(
    "dpmpp_2m_karras", "dpm_solver++",
    "DPM-Solver++(2M) on Karras levels, the model at rounded DDPM indices (diffusers'"
    " use_karras_sigmas=True; Lu et al. 2022b, Karras et al. 2022).",
    order=2, solver_type="midpoint", lower_order_final=True, final_step_to_zero=True,
    spacing="karras", index_rule="multistep")

euler_a = register_preset(
    "euler_a", "euler_ancestral",
    "Ancestral Euler on diffusers' EulerAncestralDiscreteScheduler grid (fractional linspace"
    " indices).",
    eta=1.0, s_noise=1.0, final_step_to_zero=True, spacing="linspace", index_rule="euler")
