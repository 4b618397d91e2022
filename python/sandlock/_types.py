"""Results and exceptions. The native module builds these; they hold no logic of their own."""

from __future__ import annotations

import errno as _errno
import subprocess
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple


class SandlockError(Exception):
    """Base class of every error sandlock raises."""


class PolicyError(SandlockError, ValueError):
    """A policy field or a run argument holds a value sandlock cannot accept. Nothing was started.

    ``field`` is the field as the schema names it (``max_memory``, ``fs_readable[2]``, ``argv``),
    ``value`` the offending value as text, ``reason`` what is wrong and what would be right.
    """

    def __init__(self, message: str, *, field: str = "", value: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.field = field
        self.value = value
        self.reason = reason

    def __reduce__(self) -> Any:
        kw = {"field": self.field, "value": self.value, "reason": self.reason}
        return (_rebuild, (type(self), str(self), kw))


class SandboxError(SandlockError):
    """sandlock could not set up, confine, start or supervise the command.

    ``stage`` names the step (``execve``, ``landlock_restrict_self``, ``seccomp``, ...), ``errno``
    is the kernel's error number (or ``None``), ``detail`` the object involved (a program, a path)
    and ``hint`` what a person can do about it. ``str()`` reads like
    ``execve("pyhton3"): ENOENT, no such program ...``.
    """

    def __init__(
        self,
        message: str,
        *,
        stage: str = "",
        errno: Optional[int] = None,
        detail: Optional[str] = None,
        hint: str = "",
    ) -> None:
        super().__init__(message)
        self.stage = stage
        self.errno = errno
        self.detail = detail
        self.hint = hint

    def __reduce__(self) -> Any:
        kw = {"stage": self.stage, "errno": self.errno, "detail": self.detail, "hint": self.hint}
        return (_rebuild, (type(self), str(self), kw))

    @property
    def errno_name(self) -> Optional[str]:
        """The symbolic errno (``ENOENT``), if there is an errno."""
        if self.errno is None:
            return None
        return _errno.errorcode.get(self.errno, f"errno {self.errno}")

    def __repr__(self) -> str:
        return (
            f"SandboxError(stage={self.stage!r}, errno={self.errno_name}, "
            f"detail={self.detail!r}, hint={self.hint!r})"
        )


class CalledProcessError(SandlockError, subprocess.CalledProcessError):
    """Raised by ``run(..., check=True)`` when the command did not succeed.

    It is also a ``subprocess.CalledProcessError``: ``returncode`` is the exit code, or ``-N`` for
    signal N, as ``subprocess`` reports it; ``output``/``stdout``/``stderr`` hold the captured
    bytes. ``reason`` says why the run ended (``exited``, ``timeout``, ``memory``, ...) and
    ``result`` is the whole ``Result``.
    """

    def __init__(self, result: Result) -> None:
        subprocess.CalledProcessError.__init__(
            self, result.returncode, result.args, result.stdout, result.stderr
        )
        self.result = result
        self.reason = result.reason

    def __str__(self) -> str:
        r = self.result
        if r.reason == "exited":
            return f"Command {r.args!r} returned non-zero exit status {r.exit_code}."
        if r.reason == "signaled":
            return f"Command {r.args!r} died with signal {r.signal}."
        return f"Command {r.args!r} was stopped by the sandbox ({r.reason}): {r.detail}"

    def __reduce__(self) -> Any:
        return (type(self), (self.result,))


@dataclass(frozen=True)
class Change:
    """One change a run made in its copy-on-write work directory (``workdir``)."""

    kind: str
    """``A`` (added), ``M`` (modified: content, mode or link target) or ``D`` (deleted)."""
    path: str
    """The path, as the sandbox named it."""
    dir: bool = False
    """Whether it is a directory."""

    def __str__(self) -> str:
        return f"{self.kind} {self.path}{'/' if self.dir else ''}"


@dataclass(frozen=True)
class CommitReport:
    """What became of a work directory's changes when the run ended."""

    attempted: bool
    """Whether they were to be applied (``commit`` and the run's success say so)."""
    applied: Tuple[Change, ...] = ()
    """Changes applied to the work directory."""
    not_applied: Tuple[Change, ...] = ()
    """Changes not applied (all of them when not attempted)."""
    error: Optional[str] = None
    """Why applying stopped, if it did."""
    kept: Optional[str] = None
    """Where the run's upper layer was kept when applying stopped midway."""


@dataclass(frozen=True)
class Result:
    """What a sandboxed run produced, and why it ended.

    ``reason`` is one of ``exited``, ``signaled``, ``timeout``, ``memory``, ``processes``,
    ``cpu``, ``output``, ``disk`` and ``sandbox_error``. A limit that ended the run is reported
    here, never raised. When the sandbox itself failed, ``error`` holds a :class:`SandboxError`
    (with ``stage``, ``errno`` and ``hint``) and ``success`` is false.
    """

    args: Any
    """The command as it was given."""
    success: bool
    """The command ran and exited with status 0."""
    reason: str
    """Why the run ended."""
    exit_code: Optional[int]
    """The exit code, if the main process exited."""
    signal: Optional[int]
    """The signal that ended the main process, if one did."""
    stdout: bytes = field(repr=False)
    """Captured standard output (without what a streaming reader already took)."""
    stderr: bytes = field(repr=False)
    """Captured standard error."""
    stdout_truncated: bool = False
    """stdout exceeded ``max_output`` and was cut."""
    stderr_truncated: bool = False
    """stderr exceeded ``max_output`` and was cut."""
    duration: float = 0.0
    """Wall-clock seconds from spawn to the end."""
    cpu_time: float = 0.0
    """User plus system CPU seconds of all the sandbox's processes."""
    max_rss: int = 0
    """Peak resident memory observed, in bytes."""
    error: Optional[SandboxError] = None
    """The sandbox's own failure, when ``reason`` is ``sandbox_error``."""
    detail: Optional[str] = None
    """A sentence about what ended the run, when a limit or an error did."""
    not_enforced: Tuple[str, ...] = ()
    """Protections the kernel could not apply (only with ``best_effort``)."""
    warnings: Tuple[str, ...] = ()
    """Things the run did that were allowed but worth knowing, each once (a credential the HTTP
    proxy sent over plain HTTP)."""
    limit_mechanism: str = "none"
    """How tree-wide limits were enforced (``supervisor``, ``cgroup_v2``, or ``none``)."""
    kernel_limits: Tuple[str, ...] = ()
    """The cgroup v2 files that enforced limits in the kernel (``memory.max``, ``pids.max``)."""
    changes: Tuple[Change, ...] = ()
    """What the run changed in its copy-on-write work directory (``workdir``), by path."""
    commit: Optional[CommitReport] = None
    """What became of those changes, when there is a work directory."""

    @property
    def returncode(self) -> int:
        """The status as ``subprocess`` reports it: the exit code, ``-N`` for signal N, and
        sandlock's 125/126/127 convention when the sandbox itself failed."""
        if self.exit_code is not None:
            return self.exit_code
        if self.signal is not None:
            return -self.signal
        if self.error is not None and self.error.stage == "execve":
            return 127 if self.error.errno == _errno.ENOENT else 126
        return 125

    def check_returncode(self) -> None:
        """Raises the ``SandboxError`` if the sandbox failed, or ``CalledProcessError`` if the
        command did not succeed."""
        if self.error is not None:
            raise self.error
        if not self.success:
            raise CalledProcessError(self)


def _rebuild(cls: Any, message: str, kw: Dict[str, Any]) -> Any:
    """Unpickles an exception whose constructor takes keyword-only fields."""
    return cls(message, **kw)


__all__: Sequence[str] = (
    "CalledProcessError",
    "PolicyError",
    "Result",
    "SandboxError",
    "SandlockError",
)
