"""General MCMC for a user's unnormalized log-density (docs/mcmc.md).

Kernels (``Kernel(init, step)``, jittable and vmappable, any pytree position):
``rwm``, ``mala``, ``hmc``, ``nuts``; ``run_chains`` runs C chains; ``window_adaptation``
tunes step size and mass matrix (Stan's windows); diagnostics ``rhat``, ``ess_bulk``,
``ess_tail``, ``ess_mean``, ``mcse``.
"""

from research.mcmc.adaptation import AdaptationResult, window_adaptation
from research.mcmc.base import Info, Kernel, State
from research.mcmc.chains import run_chains
from research.mcmc.diagnostics import ess_bulk, ess_mean, ess_tail, mcse, rhat
from research.mcmc.hmc import hmc
from research.mcmc.mala import mala
from research.mcmc.nuts import nuts
from research.mcmc.rwm import rwm

__all__ = ["Info", "Kernel", "State", "rwm", "mala", "hmc", "nuts", "run_chains",
           "window_adaptation", "AdaptationResult", "rhat", "ess_bulk", "ess_tail", "ess_mean", "mcse"]
