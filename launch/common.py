"""Shared launcher setup: quiet logging, one-line user errors, flag parsing helpers.

Every launcher ends with `common.run(main)` instead of `app.run(main)`. The errors a
user causes (a bad config field, flag value, workdir or a missing checkpoint) are
raised as `UserError` (or `ValueError` / `OSError` inside a `user_errors()` block,
which marks the code that only checks input) and reach the terminal as one line

    error: <message>

with exit status 2 and no traceback. Anything else keeps its traceback: it is a bug
or a failure of the computation, not of the input.
"""

from __future__ import annotations

import contextlib
import functools
import sys

from absl import app, flags, logging

USER_ERROR_STATUS = 2


class UserError(Exception):
  """An error in what the user asked for; reported as one line, exit status 2."""


def quiet_logging() -> None:
  """WARNING-level absl logs unless --verbosity was given (orbax logs every save at INFO)."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


@contextlib.contextmanager
def user_errors():
  """Inside this block, ValueError / OSError (input checks, workdir access) are user errors."""
  try:
    yield
  except UserError:
    raise
  except (ValueError, OSError) as e:
    raise UserError(_message(e)) from e


def _message(error: BaseException) -> str:
  text = str(error) or type(error).__name__
  if isinstance(error, OSError) and error.filename and str(error.filename) not in text:
    text = f"{text}: {error.filename}"
  return " ".join(text.split())  # one line


def report_user_errors(main):
  """main wrapped so that a UserError prints `error: ...` to stderr and exits with status 2."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except UserError as e:
      print(f"error: {_message(e)}", file=sys.stderr, flush=True)
      sys.exit(USER_ERROR_STATUS)

  return wrapped


def _flag_error_line(error: Exception) -> str:
  """One line from a flag parsing error (a config file's own error is its last line)."""
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  if any(l.startswith("Traceback") for l in lines):
    head = lines[0].split(":")[0]  # "flag --config=..."
    return f"{head}: {lines[-1]}"
  return " ".join(lines)


def parse_flags(argv):
  """absl's flag parsing, with a flag or config error reported as one line (status 2)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    line = _flag_error_line(e)
  except (AttributeError, KeyError, TypeError, ValueError) as e:  # a --config.a.b override
    name = str(e).strip("\"' ")
    culprit = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.") and name in a]
    line = (f"{culprit[0] if culprit else 'a --config.* override'}: the config has no field "
            f"{name!r} (or the value has the wrong type)")
  print(f"error: {line}", file=sys.stderr, flush=True)
  sys.exit(USER_ERROR_STATUS)


def run(main) -> None:
  """app.run(main) with one-line user errors (flags included)."""
  app.run(report_user_errors(main), flags_parser=parse_flags)


def parse_options(text: str | None) -> dict[str, str]:
  """--options 'k1=v1,k2=v2' -> {"k1": "v1", "k2": "v2"} (values stay strings: the sampler's
  registry entry types and checks them). Raises UserError for a malformed item."""
  from research import registry
  try:
    return registry.split_options_text(text or "")
  except ValueError as e:
    raise UserError(f"--options: {e}") from None


def parse_labels(text: str | None, n: int) -> list[int] | None:
  """--labels: one int (every sample gets it) or n comma-separated ints; None if not given."""
  if text is None or text == "":
    return None
  try:
    labels = [int(v) for v in text.split(",")]
  except ValueError:
    raise UserError(f"--labels must be integers separated by commas, got {text!r}") from None
  if len(labels) == 1:
    return labels * n
  if len(labels) != n:
    raise UserError(f"--labels must give one label or num_samples={n} labels, got {len(labels)}")
  return labels


def define_request_flags() -> None:
  """The flags of a SampleRequest, shared by launch.sample and launch.evaluate."""
  flags.DEFINE_string("sampler", None, "Sampler / ODE solver name (default: the config's).")
  flags.DEFINE_integer("num_steps", None, "Sampler steps, >= 1 (default: the config's).")
  flags.DEFINE_string("options", "", "Sampler options key=value,... (the registry's option names).")
  flags.DEFINE_float("guidance_scale", None, "Classifier-free guidance scale w >= 0 "
                     "(class-conditional models; default: the config's).")
  flags.DEFINE_string("labels", None, "Class labels: one int for all samples or one per sample.")
  flags.DEFINE_string("prompt", None, "Text an autoregressive text model continues (every row).")
  flags.DEFINE_enum("clip_x0", None, ["none", "static", "dynamic"],
                    "Clip the implied x0 (diffusion on images in [-1, 1]).")


def request_from_flags(num_samples: int):
  """The SampleRequest the request flags describe (values checked later by the family)."""
  from experiments.families.protocol import SampleRequest
  fl = flags.FLAGS
  if fl.num_steps is not None and fl.num_steps < 1:
    raise UserError(f"--num_steps must be >= 1, got {fl.num_steps}")
  if fl.guidance_scale is not None and not fl.guidance_scale >= 0:
    raise UserError(f"--guidance_scale must be >= 0, got {fl.guidance_scale}")
  labels = parse_labels(fl.labels, num_samples)
  return SampleRequest(sampler=fl.sampler, num_steps=fl.num_steps,
                       options=parse_options(fl.options), labels=labels,
                       guidance_scale=fl.guidance_scale, clip_x0=fl.clip_x0, prompt=fl.prompt)


def define_distributed_flags() -> None:
  """The flags of a multi-process job (launch.train / launch.sample / launch.evaluate)."""
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0's coordination "
                      "service (a multi-process job; with --num_processes and --process_id).")
  flags.DEFINE_integer("num_processes", None, "Processes in the job (multi-process runs).")
  flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes).")
  flags.DEFINE_bool("distributed", False, "Multi-process run: with no --coordinator_address, "
                    "JAX detects the cluster (SLURM, Cloud TPU, Open MPI, Kubernetes).")
  flags.DEFINE_integer("initialization_timeout", 300, "Seconds to wait for every process to "
                       "reach the coordinator before giving up with an error.")
  flags.DEFINE_integer("heartbeat_timeout", 100, "Seconds after which the other processes of a "
                       "job stop when one of them died.")


def initialize_distributed() -> bool:
  """jax.distributed.initialize from the flags (before any JAX computation); whether it ran.

  A bad value (a process id outside [0, num_processes), an address that is not
  host:port) is a UserError; a coordinator that does not answer within
  --initialization_timeout ends the process with one `error:` line naming the address.
  """
  fl = flags.FLAGS
  given = (fl.coordinator_address, fl.num_processes, fl.process_id)
  if not fl.distributed and all(v is None for v in given):
    return False
  from experiments import distributed
  with user_errors():
    distributed.initialize(*given, initialization_timeout=fl.initialization_timeout,
                           heartbeat_timeout=fl.heartbeat_timeout)
  return True

