"""Test setup: 8 fake CPU devices so sharding is exercised on a laptop.

The flag must be set before JAX initialises its backends, i.e. before any array
is created, so it lives here at import time of the test session.
"""
import jax

jax.config.update("jax_num_cpu_devices", 8)
