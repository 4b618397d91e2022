"""sandlock: run untrusted code under Landlock and seccomp, without root, namespaces or containers.

::

    from sandlock import Sandbox, Policy

    policy = Policy(presets=["system"], fs_writable=["/tmp/ws"], max_memory="256M")
    result = Sandbox(policy).run(["python3", "-c", "print(6 * 7)"], timeout=30)
    assert result.success and result.stdout == b"42\\n"

    result = await Sandbox(policy).run_async(["python3", "-c", code], timeout=30)

Everything not granted is denied: no files outside the policy's paths, no network, no host
environment. ``presets=["system"]`` grants what system interpreters need to start.
Limits (``timeout``, ``max_memory``, ``max_processes``, ``max_cpu``, ``max_output``, ...) end a
run with ``Result.reason`` saying which; they are never raised. Errors:

- :class:`PolicyError` (also a ``ValueError``): a bad field or argument, with ``.field`` and
  ``.value``. Nothing was started.
- :class:`SandboxError`: sandlock itself failed, with ``.stage``, ``.errno`` and ``.hint``. From
  ``run`` it arrives as ``Result.error``; ``check=True`` raises it.
- :class:`CalledProcessError`: ``run(..., check=True)`` and the command did not succeed.

``sandlock.check()`` returns the doctor report of ``sandlock check``.
"""

from __future__ import annotations

from typing import Any, Dict

from . import _sandlock
from ._sandbox import AsyncProcess, Process, Sandbox
from ._sandlock import Policy, Running
from ._types import (
    CalledProcessError,
    Change,
    CommitReport,
    PolicyError,
    Result,
    SandboxError,
    SandlockError,
)

__version__: str = _sandlock.__version__


def check(live: bool = True) -> Dict[str, Any]:
    """What this machine lets sandlock enforce: the report of ``sandlock check --json``.

    Keys include ``kernel``, ``landlock_abi``, ``protections`` (each with ``available`` and
    ``mechanism``: ``landlock``, ``seccomp``, ``supervisor`` where the supervisor stands in for a
    Landlock feature the kernel lacks, or ``unavailable``),
    ``runtime_profile`` (is a container runtime's seccomp profile in force), ``credentials``,
    ``enforced``, ``not_enforced`` and a one-line ``verdict``. With ``live`` (the default) it also
    runs ``/bin/true`` in a sandbox and reports it under ``live_test``.
    """
    return _sandlock.check(live)


__all__ = [
    "AsyncProcess",
    "CalledProcessError",
    "Change",
    "CommitReport",
    "Policy",
    "PolicyError",
    "Process",
    "Result",
    "Running",
    "Sandbox",
    "SandboxError",
    "SandlockError",
    "check",
    "__version__",
]
