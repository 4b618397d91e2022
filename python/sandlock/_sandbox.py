"""The ``Sandbox`` class and its blocking, asyncio and streaming faces.

Everything that decides anything (policy parsing, limits, output capture) happens in the Rust
core; this module only drives a native ``Running`` object from the caller's thread or event loop.
"""

from __future__ import annotations

import asyncio
import os
import signal as _signal
import subprocess
from typing import (
    Any,
    AsyncIterator,
    Iterator,
    Mapping,
    Optional,
    Sequence,
    Union,
)

from . import _sandlock
from ._sandlock import Policy
from ._types import Result

StrOrBytesPath = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
Command = Sequence[StrOrBytesPath]
Input = Union[bytes, bytearray, memoryview, str, None]
Seconds = Union[float, int, str, None]


class Sandbox:
    """A policy checked against this kernel, ready to run commands.

    Two shapes are accepted::

        Sandbox(Policy(presets=["system"], fs_writable=["/tmp/ws"]))
        Sandbox(presets=["system"], max_memory="256M")

    Keyword arguments are the fields of :class:`Policy`; given together with a policy, they
    replace its fields. Everything not granted is denied, so a sandbox without paths cannot even
    start a program: ``presets=["system"]`` grants what ``python3``, ``sh`` and ``node`` need
    (``/usr``, ``/lib*``, ``/bin`` and the harmless files of ``/etc``).

    Construction validates the policy (``PolicyError`` names the bad field and value) and raises
    ``SandboxError`` if the kernel cannot enforce a protection (unless ``best_effort=True``).
    One ``Sandbox`` may be used by any number of threads and tasks at once.
    """

    __slots__ = ("_core",)

    def __init__(
        self, policy: Union[Policy, Mapping[str, Any], None] = None, **fields: Any
    ) -> None:
        if policy is None:
            policy = Policy(**fields)
        else:
            if not isinstance(policy, Policy):
                policy = Policy(**dict(policy))
            if fields:
                policy = policy.replace(**fields)
        self._core = _sandlock.Sandbox(policy)

    @property
    def policy(self) -> Policy:
        """The policy this sandbox enforces."""
        return self._core.policy

    @property
    def not_enforced(self) -> tuple[str, ...]:
        """Protections this kernel cannot apply (only ever non-empty with ``best_effort``)."""
        return self._core.not_enforced

    def run(
        self,
        cmd: Command,
        *,
        timeout: Seconds = None,
        input: Input = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[StrOrBytesPath] = None,
        check: bool = False,
    ) -> Result:
        """Runs ``cmd`` to completion and returns its :class:`Result`.

        The GIL is released for the whole run, spawn included. ``timeout`` (seconds, or a string
        such as ``"500ms"``) overrides the policy's; ``input`` is sent to stdin; ``env`` adds
        variables; ``cwd`` overrides the policy's working directory. Limits are reported in the
        result (``reason``), never raised. With ``check=True``, a failed run raises
        ``CalledProcessError`` (a ``subprocess.CalledProcessError``) and a sandbox failure raises
        its ``SandboxError``.
        """
        result = self._core.run(cmd, timeout=timeout, input=input, env=env, cwd=cwd)
        if check:
            result.check_returncode()
        return result

    def dry_run(
        self,
        cmd: Command,
        *,
        timeout: Seconds = None,
        input: Input = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[StrOrBytesPath] = None,
    ) -> Result:
        """Runs ``cmd`` with its work directory copy-on-write and discards what it changed there;
        the :class:`Result`'s ``changes`` list the changes (``A``, ``M``, ``D`` and the path).

        The work directory is the policy's ``workdir``, or else the working directory (``cwd``,
        the policy's, or the caller's own).
        """
        p = self.policy
        workdir = p.workdir or (os.fsdecode(cwd) if cwd is not None else None) or p.cwd
        sandbox = Sandbox(p.replace(workdir=workdir or os.getcwd(), commit="never"))
        return sandbox.run(cmd, timeout=timeout, input=input, env=env, cwd=cwd)

    async def run_async(
        self,
        cmd: Command,
        *,
        timeout: Seconds = None,
        input: Input = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[StrOrBytesPath] = None,
        check: bool = False,
    ) -> Result:
        """Like :meth:`run`, driven by the running asyncio loop instead of a thread.

        The spawn is synchronous (well under a millisecond); after that the supervisor's
        descriptor is registered with the loop and no thread is used. Cancelling the awaiting task
        kills the whole sandbox.
        """
        running = self._core.spawn(cmd, timeout=timeout, input=input, env=env, cwd=cwd)
        try:
            await _drive(running)
        except BaseException:
            running.kill("the awaiting task was cancelled")
            running.result()
            raise
        result = running.result()
        if check:
            result.check_returncode()
        return result

    def popen(
        self,
        cmd: Command,
        *,
        timeout: Seconds = None,
        input: Input = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[StrOrBytesPath] = None,
    ) -> Process:
        """Starts ``cmd`` and returns a :class:`Process` whose stdout can be read as it comes.

        ::

            with sandbox.popen(["python3", "train.py"], timeout=600) as proc:
                for line in proc:
                    print("progress:", line.decode().rstrip())
            result = proc.wait()
        """
        return Process(self._core.spawn(cmd, timeout=timeout, input=input, env=env, cwd=cwd))

    def popen_async(
        self,
        cmd: Command,
        *,
        timeout: Seconds = None,
        input: Input = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[StrOrBytesPath] = None,
    ) -> AsyncProcess:
        """Starts ``cmd`` and returns an :class:`AsyncProcess` for ``async for line in proc``.

        ::

            async with sandbox.popen_async(["python3", "job.py"]) as proc:
                async for line in proc:
                    await report(line)
            result = await proc.wait()
        """
        running = self._core.spawn(cmd, timeout=timeout, input=input, env=env, cwd=cwd)
        return AsyncProcess(running)

    def __repr__(self) -> str:
        return f"Sandbox({self._core.policy!r})"


class _Lines:
    """Splits a byte stream into lines, keeping each line's ``\\n`` (as file iteration does)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buf += chunk
        if b"\n" not in chunk:
            return []
        *lines, self._buf = self._buf.split(b"\n")
        return [line + b"\n" for line in lines]

    def rest(self) -> list[bytes]:
        rest, self._buf = self._buf, b""
        return [rest] if rest else []


class _Signals:
    """Signalling a running sandbox, shared by :class:`Process` and :class:`AsyncProcess`."""

    _running: _sandlock.Running

    def send_signal(self, sig: int) -> None:
        """Sends ``sig`` to every process of the sandbox."""
        self._running.send_signal(sig)

    def terminate(self) -> None:
        """Sends SIGTERM to every process of the sandbox."""
        self._running.send_signal(_signal.SIGTERM)

    def kill(self) -> None:
        """Kills every process of the sandbox now (the result says ``signaled``)."""
        self._running.kill()


class Process(_Signals):
    """A sandboxed command started by :meth:`Sandbox.popen`.

    Iterating yields stdout lines (bytes, with their newline) as the command writes them.
    Output read this way is not repeated in ``Result.stdout``; stderr stays in the result.
    Leaving a ``with`` block kills the sandbox if it is still running.
    """

    __slots__ = ("_running",)

    def __init__(self, running: _sandlock.Running) -> None:
        self._running = running

    @property
    def pid(self) -> Optional[int]:
        """The main process id, which is also the sandbox's process group id."""
        return self._running.pid

    @property
    def args(self) -> Any:
        """The command as it was given."""
        return self._running.args

    def __iter__(self) -> Iterator[bytes]:
        return self.iter_lines()

    def iter_lines(self) -> Iterator[bytes]:
        """Yields stdout line by line as it arrives (the last line may lack a newline)."""
        lines = _Lines()
        for chunk in self.iter_chunks():
            yield from lines.feed(chunk)
        yield from lines.rest()

    def iter_chunks(self) -> Iterator[bytes]:
        """Yields stdout in chunks as it arrives, until the command ends."""
        running = self._running
        while True:
            done = running.step(None)
            chunk = running.take_stdout()
            if chunk:
                yield chunk
            if done:
                return

    def poll(self) -> Optional[Result]:
        """The result if the run is finished, else ``None``; never blocks."""
        if self._running.step(0):
            return self._running.result()
        return None

    def wait(self, timeout: Optional[float] = None) -> Result:
        """Waits for the end of the run (without the GIL) and returns its result.

        Raises ``subprocess.TimeoutExpired`` if ``timeout`` seconds pass first; the sandbox keeps
        running (its own ``timeout`` still applies).
        """
        if not self._running.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        return self._running.result()

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._running.done():
            self._running.kill("the with block was left while the command was running")
        self._running.wait(None)

    def __repr__(self) -> str:
        return f"<sandlock.Process pid={self.pid} args={self.args!r}>"


class AsyncProcess(_Signals):
    """A sandboxed command started by :meth:`Sandbox.popen_async`, driven by the asyncio loop.

    ``async for line in proc`` yields stdout lines as they arrive; ``await proc.wait()`` returns
    the result. Leaving an ``async with`` block kills the sandbox if it is still running.
    """

    __slots__ = ("_running", "_tick")

    def __init__(self, running: _sandlock.Running) -> None:
        self._running = running
        self._tick: Optional[asyncio.Future[bool]] = None

    @property
    def pid(self) -> Optional[int]:
        """The main process id, which is also the sandbox's process group id."""
        return self._running.pid

    @property
    def args(self) -> Any:
        """The command as it was given."""
        return self._running.args

    async def _advance(self) -> bool:
        """Waits until the run has taken one more step; returns whether it is finished.

        Several coroutines may wait at once (one reads lines while another awaits the result):
        the first drives the run from the loop, the others wait for its step. Callers take output
        after each return, so output a step captured is never left waiting for the next event.
        """
        if self._tick is not None:
            return await asyncio.shield(self._tick)
        loop = asyncio.get_running_loop()
        tick = self._tick = loop.create_future()
        done = False
        try:
            await _ready(loop, self._running)
            done = self._running.step(0)
        finally:
            self._tick = None
            if not tick.done():
                tick.set_result(done)
        return done

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.iter_lines()

    async def iter_lines(self) -> AsyncIterator[bytes]:
        """Yields stdout line by line as it arrives (the last line may lack a newline)."""
        lines = _Lines()
        async for chunk in self.iter_chunks():
            for line in lines.feed(chunk):
                yield line
        for line in lines.rest():
            yield line

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Yields stdout in chunks as it arrives, until the command ends."""
        done = self._running.step(0)
        while True:
            chunk = self._running.take_stdout()
            if chunk:
                yield chunk
            if done:
                return
            done = await self._advance()

    async def wait(self) -> Result:
        """Waits for the end of the run and returns its result."""
        done = self._running.step(0)
        while not done:
            done = await self._advance()
        return self._running.result()

    async def __aenter__(self) -> AsyncProcess:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self._running.done():
            self._running.kill("the async with block was left while the command was running")
        await self.wait()

    def __repr__(self) -> str:
        return f"<sandlock.AsyncProcess pid={self.pid} args={self.args!r}>"


async def _ready(loop: asyncio.AbstractEventLoop, running: _sandlock.Running) -> None:
    """Waits until the supervisor has work: its descriptor is readable or its next deadline
    (timeout, resource sample, output drain) has come."""
    wake: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not wake.done():
            wake.set_result(None)

    fd = running.fileno()
    delay = running.next_wakeup()
    loop.add_reader(fd, ready)
    timer = loop.call_at(loop.time() + delay, ready) if delay is not None else None
    try:
        await wake
    finally:
        loop.remove_reader(fd)
        if timer is not None:
            timer.cancel()


async def _drive(running: _sandlock.Running) -> None:
    """Steps ``running`` from the event loop until it is finished."""
    loop = asyncio.get_running_loop()
    while not running.step(0):
        await _ready(loop, running)
