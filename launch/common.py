"""Shared launcher setup."""

from absl import flags, logging


def quiet_logging() -> None:
  """WARNING-level absl logs unless --verbosity was given (orbax logs every save at INFO)."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
