"""Filesystem views through the Python API: a mount served from a host directory, a private /tmp
per run, and the errors that name the field. The core's suite (tests/suite/fsview.rs) covers every
path operation and the races."""

from __future__ import annotations

import asyncio
import os
import pathlib

import pytest

from sandlock import PolicyError, Sandbox


def test_a_mount_serves_the_host_directory(workspace: str) -> None:
    with open(f"{workspace}/in.txt", "w") as f:
        f.write("from the host")
    sb = Sandbox(presets=["system"], fs_mount={"/mnt/data": pathlib.Path(workspace)})
    r = sb.run(
        ["sh", "-c", "cat /mnt/data/in.txt; echo out > /mnt/data/out.txt; cd /mnt/data && pwd"]
    )
    assert r.success, r
    assert r.stdout == b"from the host/mnt/data\n"
    with open(f"{workspace}/out.txt") as f:
        assert f.read() == "out\n"
    # Control: without the mount, the path is nowhere.
    assert not Sandbox(presets=["system"]).run(["cat", "/mnt/data/in.txt"]).success


def test_a_read_only_mount_refuses_writes(workspace: str) -> None:
    sb = Sandbox(presets=["system"], fs_mount={"/mnt/data": f"{workspace}:ro"})
    r = sb.run(["sh", "-c", "echo x > /mnt/data/f"])
    assert not r.success and b"Read-only file system" in r.stderr
    assert not os.path.exists(f"{workspace}/f")


def test_private_tmp_is_per_run_and_removed() -> None:
    sb = Sandbox(presets=["system"], private_tmp=True)

    async def both() -> list[bytes]:
        code = "echo $$ > /tmp/same; sleep 0.3; cat /tmp/same; ls /tmp"
        runs = [sb.run_async(["sh", "-c", code]) for _ in range(2)]
        return [r.stdout for r in await asyncio.gather(*runs)]

    outs = asyncio.run(both())
    # Each run reads its own pid back, and its /tmp holds only its own file.
    for out in outs:
        pid, listing = out.split(b"\n", 1)
        assert listing == b"same\n", out
        assert pid.isdigit()
    assert outs[0] != outs[1]
    # Control: the host's /tmp never got either file.
    pids = {o.split(b"\n")[0] for o in outs}
    host = pathlib.Path("/tmp/same")
    assert not host.exists() or host.read_bytes().strip() not in pids


def test_view_errors_name_the_field(workspace: str) -> None:
    with pytest.raises(PolicyError) as e:
        Sandbox(presets=["system"], fs_mount={"mnt/data": workspace})
    assert e.value.field == "fs_mount.mnt/data"
    with pytest.raises(PolicyError) as e:
        Sandbox(presets=["system"], fs_mount={"/mnt/data": f"{workspace}/missing"})
    assert "does not exist" in str(e.value)
    with pytest.raises(PolicyError) as e:
        Sandbox(fs_writable=["/tmp"], private_tmp=True)
    assert e.value.field == "fs_writable[0]"


def _populate(workspace: str) -> None:
    with open(f"{workspace}/edit.txt", "w") as f:
        f.write("one\n")
    with open(f"{workspace}/gone.txt", "w") as f:
        f.write("bye\n")
    os.mkdir(f"{workspace}/empty")


SCRIPT = "echo two >> edit.txt; rm gone.txt; rmdir empty; mkdir d; echo n > d/new; mv d/new d/moved"


def test_dry_run_lists_the_changes_and_discards_them(workspace: str) -> None:
    _populate(workspace)
    sb = Sandbox(presets=["system"])
    r = sb.dry_run(["sh", "-c", SCRIPT], cwd=workspace)
    assert r.success, r
    assert [str(c) for c in r.changes] == [
        f"A {workspace}/d/",
        f"A {workspace}/d/moved",
        f"M {workspace}/edit.txt",
        f"D {workspace}/empty/",
        f"D {workspace}/gone.txt",
    ]
    assert r.commit is not None and not r.commit.attempted
    assert r.commit.not_applied == r.changes
    # Nothing changed on the host.
    assert sorted(os.listdir(workspace)) == ["edit.txt", "empty", "gone.txt"]
    assert pathlib.Path(f"{workspace}/edit.txt").read_text() == "one\n"
    # Control: the same command with the work directory committed makes those changes.
    real = Sandbox(presets=["system"], workdir=workspace, cwd=workspace).run(["sh", "-c", SCRIPT])
    assert real.success, real
    assert real.changes == r.changes
    # Applied deletions first, then the rest.
    assert real.commit is not None and set(real.commit.applied) == set(r.changes)
    assert sorted(os.listdir(workspace)) == ["d", "edit.txt"]
    assert pathlib.Path(f"{workspace}/edit.txt").read_text() == "one\ntwo\n"
    assert os.listdir(f"{workspace}/d") == ["moved"]


def test_a_work_directory_commits_on_success_only_by_default(workspace: str) -> None:
    sb = Sandbox(presets=["system"], workdir=workspace, cwd=workspace)
    failed = sb.run(["sh", "-c", "echo lost > f; exit 2"])
    assert failed.returncode == 2
    assert failed.commit is not None and not failed.commit.attempted
    assert [str(c) for c in failed.commit.not_applied] == [f"A {workspace}/f"]
    assert not os.path.exists(f"{workspace}/f")
    kept = Sandbox(presets=["system"], workdir=workspace, cwd=workspace, commit="always")
    assert kept.run(["sh", "-c", "echo kept > f; exit 2"]).returncode == 2
    assert pathlib.Path(f"{workspace}/f").read_text() == "kept\n"
    with pytest.raises(PolicyError) as e:
        Sandbox(workdir=workspace, commit="sometimes")
    assert e.value.field == "commit"
    with pytest.raises(PolicyError) as e:
        Sandbox(workdir=workspace, fs_writable=[workspace])
    assert e.value.field == "fs_writable[0]"
