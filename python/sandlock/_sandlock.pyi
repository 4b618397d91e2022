"""Type stubs for the native module ``sandlock._sandlock`` (crates/sandlock-py)."""

from os import PathLike
from typing import Any, ClassVar, Mapping, Optional, Sequence, Tuple, Union

from ._types import Result

_Path = Union[str, bytes, PathLike[str], PathLike[bytes]]
_Command = Sequence[_Path]
_Input = Union[bytes, bytearray, memoryview, str, None]
_Seconds = Union[float, int, str, None]

__version__: str
DEFAULT_PATH: str

class Policy:
    """What a sandbox may touch and how much it may use (the core schema)."""

    fields: ClassVar[Tuple[str, ...]]
    fs_readable: list[str]
    fs_writable: list[str]
    presets: list[str]
    cwd: Optional[str]
    env: dict[str, str]
    pass_env: list[str]
    net_allow: list[str]
    net_deny: list[str]
    net_allow_bind: list[str]
    http_allow: list[str]
    http_deny: list[str]
    http_auth: list[str]
    credentials: dict[str, str]
    http_ca_out: Optional[str]
    http_inject_ca: Optional[str]
    http_upstream_ca: Optional[str]
    extra_deny_syscalls: list[str]
    best_effort: bool
    timeout: Optional[float]
    max_memory: Optional[int]
    max_processes: Optional[int]
    max_threads: Optional[int]
    max_cpu: Optional[float]
    max_output: Optional[int]
    max_file_size: Optional[int]
    max_open_files: Optional[int]
    max_disk: Optional[int]
    cgroup: str
    cgroup_parent: Optional[str]
    fs_mount: dict[str, str]
    private_tmp: bool
    workdir: Optional[str]
    commit: str
    def __init__(
        self,
        *,
        fs_readable: Optional[Sequence[_Path]] = ...,
        fs_writable: Optional[Sequence[_Path]] = ...,
        presets: Optional[Sequence[str]] = ...,
        cwd: Optional[_Path] = ...,
        env: Optional[Mapping[str, str]] = ...,
        pass_env: Optional[Sequence[str]] = ...,
        net_allow: Optional[Sequence[str]] = ...,
        net_deny: Optional[Sequence[str]] = ...,
        net_allow_bind: Optional[Sequence[Union[str, int]]] = ...,
        http_allow: Optional[Sequence[str]] = ...,
        http_deny: Optional[Sequence[str]] = ...,
        http_auth: Optional[Sequence[str]] = ...,
        credentials: Optional[Mapping[str, str]] = ...,
        http_ca_out: Optional[_Path] = ...,
        http_inject_ca: Optional[_Path] = ...,
        http_upstream_ca: Optional[_Path] = ...,
        extra_deny_syscalls: Optional[Sequence[str]] = ...,
        best_effort: Optional[bool] = ...,
        timeout: _Seconds = ...,
        max_memory: Union[int, str, None] = ...,
        max_processes: Optional[int] = ...,
        max_threads: Optional[int] = ...,
        max_cpu: _Seconds = ...,
        max_output: Union[int, str, None] = ...,
        max_file_size: Union[int, str, None] = ...,
        max_open_files: Optional[int] = ...,
        max_disk: Union[int, str, None] = ...,
        cgroup: Optional[str] = ...,
        cgroup_parent: Optional[_Path] = ...,
        fs_mount: Optional[Mapping[str, _Path]] = ...,
        private_tmp: Optional[bool] = ...,
        workdir: Optional[_Path] = ...,
        commit: Optional[str] = ...,
    ) -> None: ...
    @staticmethod
    def from_toml(text: str) -> Policy: ...
    def replace(self, **fields: Any) -> Policy: ...
    def to_dict(self) -> dict[str, Any]: ...
    def __eq__(self, other: object) -> bool: ...

class Running:
    """A started sandbox, driven step by step (used by run_async and popen)."""

    @property
    def pid(self) -> Optional[int]: ...
    @property
    def args(self) -> Any: ...
    def fileno(self) -> int: ...
    def next_wakeup(self) -> Optional[float]: ...
    def step(self, timeout: Optional[float] = None) -> bool: ...
    def done(self) -> bool: ...
    def take_stdout(self) -> bytes: ...
    def take_stderr(self) -> bytes: ...
    def send_signal(self, signal: int) -> None: ...
    def kill(self, detail: str = "killed by the caller") -> None: ...
    def wait(self, timeout: Optional[float] = None) -> bool: ...
    def result(self) -> Result: ...

class Sandbox:
    """A policy checked against this kernel (the native half of ``sandlock.Sandbox``)."""

    def __init__(self, policy: Union[Policy, Mapping[str, Any], None] = None) -> None: ...
    @property
    def policy(self) -> Policy: ...
    @property
    def not_enforced(self) -> Tuple[str, ...]: ...
    def run(
        self,
        cmd: _Command,
        *,
        timeout: _Seconds = None,
        input: _Input = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[_Path] = None,
    ) -> Result: ...
    def spawn(
        self,
        cmd: _Command,
        *,
        timeout: _Seconds = None,
        input: _Input = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[_Path] = None,
    ) -> Running: ...

def check(live: bool = True) -> dict[str, Any]: ...
