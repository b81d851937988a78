"""Fault injection for tests and ``benchmarks/fault_tolerance.py``: a process dies abruptly at a chosen
point, once (``os._exit``: no clean-up, like a lost node or an OOM kill).

``RAYGEN_FAULT_<SITE>=N`` kills the process that reaches event N of that site (counted per process);
``RAYGEN_FAULT_MARKER`` (a file path, required with any site) makes it happen once: the first process to
get there creates the file and dies, a later one (the restarted actor or worker) finds it and carries on.

Sites:

* ``AT_STEP``: a Ray Train worker of rank 0, right after training step N and its report;
* ``TEACHER_BATCH``: a corpus keyword (teacher) actor, on its N-th batch, before answering it;
* ``GENERATE_CALL``: a generation-pool actor, on its N-th ``generate`` call, before answering it.

Normal runs set none of these variables; :func:`fault_env` forwards them to the Ray workers and actors
raygen starts (only when set).
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger("raygen")

MARKER = "RAYGEN_FAULT_MARKER"
SITES = ("AT_STEP", "TEACHER_BATCH", "GENERATE_CALL")


def site_var(site: str) -> str:
    if site not in SITES:
        raise ValueError(f"unknown fault site {site!r}; sites: {SITES}")
    return f"RAYGEN_FAULT_{site}"


def fault_env() -> dict[str, str]:
    """The driver's fault-injection variables, to forward to workers and actors (empty in normal runs)."""
    env = {k: os.environ[k] for k in [*map(site_var, SITES), MARKER] if os.environ.get(k)}
    if set(env) - {MARKER} and MARKER not in env:
        raise ValueError(f"{', '.join(sorted(set(env) - {MARKER}))} needs {MARKER} (a file path) so the fault "
                         "happens only once")
    return env


def fault_options() -> dict:
    """Ray ``.options()`` / ``ray_remote_args`` that hand :func:`fault_env` to an actor; ``{}`` when unset
    (so normal runs' actors are started exactly as without fault injection)."""
    env = fault_env()
    return {"runtime_env": {"env_vars": env}} if env else {}


def maybe_fault(site: str, n: int) -> None:
    """Die here (once, see the module doc) when ``RAYGEN_FAULT_<site>`` is ``n``."""
    at = os.environ.get(site_var(site))
    if not at or n != int(at):
        return
    try:
        os.close(os.open(os.environ[MARKER], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    log.warning("fault injection: %s %d: this process exits", site, n)
    os._exit(1)
