"""The public API: both shapes, Result fields, Policy behaviour, and clear errors for bad input."""

from __future__ import annotations

import errno
import os
import pathlib
import subprocess
import sys

import pytest

import sandlock
from sandlock import (
    CalledProcessError,
    Policy,
    PolicyError,
    Result,
    Sandbox,
    SandboxError,
    SandlockError,
)


def test_policy_shape_runs_python(workspace: str) -> None:
    policy = Policy(fs_readable=["/usr", "/lib", "/etc"], fs_writable=[workspace])
    r = Sandbox(policy).run(["python3", "-c", "print(6 * 7)"])
    assert isinstance(r, Result)
    assert (r.success, r.exit_code, r.error, r.reason) == (True, 0, None, "exited")
    assert r.stdout == b"42\n"
    assert r.stderr == b""


def test_flat_shape_with_timeout_and_input() -> None:
    r = Sandbox(presets=["system"], max_memory="256M").run(
        ["python3", "-c", "import sys; print(sys.stdin.read().upper())"],
        timeout=30,
        input=b"hello",
    )
    assert r.success, r
    assert r.stdout == b"HELLO\n"


def test_str_input_is_sent_as_utf8(system: Sandbox) -> None:
    assert system.run(["cat"], input="héllo").stdout == "héllo".encode()


def test_result_carries_every_field(system: Sandbox) -> None:
    # Long enough for the supervisor to sample memory at least once (peak memory is sampled).
    script = "echo out; echo err >&2; sleep 0.1; exit 3"
    r = system.run(["sh", "-c", script])
    assert (r.success, r.exit_code, r.signal, r.reason) == (False, 3, None, "exited")
    assert (r.stdout, r.stderr) == (b"out\n", b"err\n")
    assert (r.stdout_truncated, r.stderr_truncated) == (False, False)
    assert 0 < r.duration < 10
    assert r.cpu_time >= 0
    assert r.max_rss > 0
    assert r.returncode == 3
    assert r.args == ["sh", "-c", script]


def test_signal_is_reported(system: Sandbox) -> None:
    r = system.run(["sh", "-c", "kill -TERM $$"])
    assert (r.reason, r.signal, r.exit_code, r.returncode) == ("signaled", 15, None, -15)


def test_invalid_utf8_output_is_kept_as_bytes(system: Sandbox) -> None:
    r = system.run(["printf", "\\377\\376ok"])
    assert r.stdout == b"\xff\xfeok"


def test_env_and_cwd_per_run(system: Sandbox, workspace: str) -> None:
    sb = Sandbox(presets=["system"], fs_writable=[workspace])
    r = sb.run(["sh", "-c", 'echo "$GREETING"; pwd'], env={"GREETING": "hi"}, cwd=workspace)
    assert r.stdout.decode().splitlines() == ["hi", os.path.realpath(workspace)]


def test_pathlike_arguments(workspace: str) -> None:
    ws = pathlib.Path(workspace)
    sb = Sandbox(presets=["system"], fs_writable=[ws])
    r = sb.run([pathlib.Path("/bin/sh"), "-c", "echo ok > f; cat f"], cwd=ws)
    assert r.stdout == b"ok\n"
    assert (ws / "f").read_text() == "ok\n"


def test_policy_fields_and_repr() -> None:
    p = Policy(presets=["system"], max_memory="256M", timeout="1.5s", net_allow=[":443"])
    assert p.max_memory == 256 << 20
    assert p.timeout == 1.5
    assert p.presets == ["system"]
    assert p.fs_readable == []
    assert "max_memory" in repr(p) and "fs_writable" not in repr(p)
    assert set(Policy.fields) >= {"fs_readable", "max_disk", "extra_deny_syscalls"}
    assert p.to_dict()["net_allow"] == [":443"]
    assert p == Policy(presets=["system"], max_memory=256 << 20, timeout=1.5, net_allow=[":443"])
    with pytest.raises(AttributeError):
        _ = p.no_such_field  # type: ignore[attr-defined]


def test_policy_replace_and_mix_with_kwargs(workspace: str) -> None:
    base = Policy(presets=["system"], max_memory="1G")
    p = base.replace(max_memory="128M", fs_writable=[workspace])
    assert (base.max_memory, p.max_memory) == (1 << 30, 128 << 20)
    assert Sandbox(base, max_processes=8).policy.max_processes == 8
    assert Sandbox({"presets": ["system"]}).run(["true"]).success
    assert base.replace(max_memory=None).max_memory is None


def test_policy_from_toml() -> None:
    p = Policy.from_toml('presets = ["system"]\nmax_output = "1M"\n[env]\nA = "b"\n')
    assert (p.max_output, p.env) == (1 << 20, {"A": "b"})
    with pytest.raises(PolicyError) as e:
        Policy.from_toml("max_disk = 'lots'")
    assert e.value.field == "max_disk"


def test_unknown_field_names_field_and_lists_the_right_ones() -> None:
    with pytest.raises(PolicyError) as e:
        Policy(fs_readabel=["/usr"])
    assert e.value.field == "fs_readabel"
    assert "unknown field" in str(e.value) and "fs_readable" in str(e.value)
    with pytest.raises(PolicyError):
        Sandbox(presets=["system"], max_memroy="1G")


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("max_memory", "12Q", "12Q"),
        ("max_processes", -3, "-3"),
        ("timeout", "soon", "soon"),
        ("fs_readable", "/usr", "/usr"),
        ("presets", ["everything"], "everything"),
        ("best_effort", "yes", "yes"),
    ],
)
def test_bad_value_names_field_and_value(field: str, value: object, shown: str) -> None:
    with pytest.raises(PolicyError) as e:
        Policy(**{field: value})
    assert e.value.field.startswith(field)
    assert shown in e.value.value or shown in str(e.value)
    assert isinstance(e.value, ValueError) and isinstance(e.value, SandlockError)


def test_values_checked_by_the_sandbox_name_field_and_value() -> None:
    with pytest.raises(PolicyError) as e:
        Sandbox(presets=["system"], net_allow=[":443", "exa mple.com:443"])
    assert (e.value.field, e.value.value) == ("net_allow[1]", "exa mple.com:443")
    assert "not a host name" in e.value.reason


def test_unconvertible_value_names_field() -> None:
    with pytest.raises(PolicyError) as e:
        Policy(fs_readable=["/usr", object()])
    assert e.value.field == "fs_readable[1]"
    assert "object" in str(e.value)


def test_missing_path_is_a_policy_error_naming_it() -> None:
    with pytest.raises(PolicyError) as e:
        Sandbox(fs_readable=["/usr", "/definitely/not/here"])
    assert e.value.field == "fs_readable[1]"
    assert "/definitely/not/here" in str(e.value)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"cmd": "echo hi"}, "argv"),
        ({"cmd": []}, "argv"),
        ({"cmd": ["echo", 3]}, "argv[1]"),
        ({"cmd": ["echo", "a\0b"]}, "argv[1]"),
        ({"cmd": ["true"], "timeout": -1}, "timeout"),
        ({"cmd": ["true"], "timeout": "never"}, "timeout"),
        ({"cmd": ["true"], "input": 42}, "input"),
        ({"cmd": ["true"], "env": {"A": 1}}, 'env["A"]'),
        ({"cmd": ["true"], "env": ["A=1"]}, "env"),
        ({"cmd": ["true"], "cwd": 7}, "cwd"),
    ],
)
def test_bad_run_arguments_raise_policy_error(
    system: Sandbox, kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(PolicyError) as e:
        system.run(**kwargs)  # type: ignore[arg-type]
    assert e.value.field == field, str(e.value)


def test_missing_program_is_a_result_error_with_stage_errno_hint(system: Sandbox) -> None:
    r = system.run(["pyhton3", "-c", "pass"])
    assert (r.success, r.reason, r.exit_code) == (False, "sandbox_error", None)
    assert isinstance(r.error, SandboxError)
    assert (r.error.stage, r.error.errno, r.error.errno_name) == ("execve", errno.ENOENT, "ENOENT")
    assert r.error.detail == "pyhton3"
    assert "PATH" in r.error.hint
    assert str(r.error).startswith('execve("pyhton3"): ENOENT')
    assert r.returncode == 127


def test_unreadable_program_error_says_what_to_grant() -> None:
    r = Sandbox().run(["/usr/bin/true"])
    assert r.error is not None and r.error.errno == errno.EACCES
    assert "fs_readable" in r.error.hint
    assert r.returncode == 126


def test_check_true_raises_like_subprocess(system: Sandbox) -> None:
    with pytest.raises(CalledProcessError) as e:
        system.run(["sh", "-c", "echo partial; exit 4"], check=True)
    assert isinstance(e.value, subprocess.CalledProcessError)
    assert isinstance(e.value, SandlockError)
    assert (e.value.returncode, e.value.output, e.value.reason) == (4, b"partial\n", "exited")
    assert "non-zero exit status 4" in str(e.value)
    with pytest.raises(SandboxError) as s:
        system.run(["no-such-program"], check=True)
    assert s.value.stage == "execve"
    assert system.run(["true"], check=True).success


def test_check_true_reports_limits_by_reason(system: Sandbox) -> None:
    with pytest.raises(CalledProcessError) as e:
        system.run(["sleep", "5"], timeout=0.2, check=True)
    assert e.value.reason == "timeout"
    assert "timeout" in str(e.value)


def test_sandbox_is_reusable_and_repr(system: Sandbox) -> None:
    for i in range(5):
        assert system.run(["echo", str(i)]).stdout == f"{i}\n".encode()
    assert "system" in repr(system)
    assert system.not_enforced == ()


def test_check_returns_the_doctor_report() -> None:
    report = sandlock.check()
    assert {"kernel", "landlock_abi", "protections", "verdict", "runtime_profile"} <= set(report)
    assert isinstance(report["protections"], list)
    assert report["live_test"]["ok"] is True, report
    assert sandlock.check(live=False)["live_test"] is None
    profile = report["runtime_profile"]
    print(f"uid {os.getuid()}, restrictive profile: {profile['restrictive']}: {report['verdict']}")


def test_version_and_typing_files() -> None:
    assert sandlock.__version__
    pkg = pathlib.Path(sandlock.__file__).parent
    assert (pkg / "py.typed").exists()
    assert (pkg / "_sandlock.pyi").exists()
    assert sys.modules["sandlock._sandlock"].__name__ == "sandlock._sandlock"


def test_policy_results_and_errors_pickle(system: Sandbox) -> None:
    import pickle

    p = Policy(presets=["system"], max_memory="1G", timeout=2.5, env={"A": "b"})
    assert pickle.loads(pickle.dumps(p)) == p
    assert Sandbox(policy=p).policy == p
    r = pickle.loads(pickle.dumps(system.run(["no-such-program"])))
    assert isinstance(r.error, SandboxError)
    assert (r.error.stage, r.error.errno) == ("execve", errno.ENOENT)
    with pytest.raises(PolicyError) as e:
        Policy(max_memory="lots")
    back = pickle.loads(pickle.dumps(e.value))
    assert (back.field, back.value, str(back)) == ("max_memory", "lots", str(e.value))


def _names_known() -> bool:
    hosts = pathlib.Path("/etc/hosts").read_text()
    return "127.0.0.2 allowed.test" in hosts and "127.0.0.3 other.test" in hosts


def test_net_rules_by_name_and_address(workspace: str) -> None:
    if not _names_known():
        pytest.skip("skipped: /etc/hosts lacks allowed.test and other.test (test.sh adds them)")
    import socket

    servers = [socket.create_server((ip, 0)) for ip in ("127.0.0.2", "127.0.0.3")]
    port = servers[0].getsockname()[1]
    servers[1].close()
    servers[1] = socket.create_server(("127.0.0.3", port))
    code = (
        "import socket, errno, sys\n"
        "for h in sys.argv[1:]:\n"
        "    try:\n"
        f"        socket.create_connection((h, {port}), timeout=3).close(); print('ok')\n"
        "    except OSError as e:\n"
        "        print(errno.errorcode.get(e.errno, e))\n"
    )
    try:
        allow = [f"allowed.test:{port}"]
        sb = Sandbox(presets=["system"], fs_writable=[workspace], net_allow=allow)
        r = sb.run(["python3", "-c", code, "allowed.test", "other.test", "127.0.0.3"])
        assert r.stdout.decode().split() == ["ok", "EACCES", "EACCES"], r.stderr
        # Deny alone: everything but the denied address.
        sb = Sandbox(presets=["system"], fs_writable=[workspace], net_deny=["127.0.0.3"])
        r = sb.run(["python3", "-c", code, "127.0.0.2", "127.0.0.3"])
        assert r.stdout.decode().split() == ["ok", "EACCES"], r.stderr
    finally:
        for s in servers:
            s.close()


def test_http_rules_and_a_credential_from_the_sdk(
    workspace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import http.server
    import threading

    seen: list[tuple[str, str | None]] = []

    class Upstream(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.path, self.headers.get("Authorization")))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"hi")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Upstream)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("SL_PY_TOKEN", "sdk-secret-value")
    code = (
        "import os, urllib.request, urllib.error\n"
        "for p in ('ok', 'other'):\n"
        "    try:\n"
        f"        r = urllib.request.urlopen('http://127.0.0.2:{port}/' + p, timeout=10)\n"
        "        print(r.status, r.read().decode())\n"
        "    except urllib.error.HTTPError as e:\n"
        "        print(e.code)\n"
        "print('SL_PY_TOKEN' in os.environ)\n"
    )
    try:
        sb = Sandbox(
            presets=["system"],
            fs_writable=[workspace],
            http_allow=[f"GET 127.0.0.2:{port}/ok"],
            credentials={"tok": "env:SL_PY_TOKEN"},
            http_auth=[f"GET 127.0.0.2:{port}/* bearer tok"],
        )
        r = sb.run(["python3", "-c", code])
        assert r.stdout.decode().split("\n")[:3] == ["200 hi", "403", "False"], r.stderr
        # The refused request never left; the allowed one carried the credential.
        assert seen == [("/ok", "Bearer sdk-secret-value")]
        assert len(r.warnings) == 1 and "plain HTTP" in r.warnings[0], r.warnings
        assert "sdk-secret-value" not in r.warnings[0]
        with pytest.raises(PolicyError) as e:
            Sandbox(presets=["system"], http_allow=["GET h.test", "FETCH"])
        assert (e.value.field, e.value.value) == ("http_allow[1]", "FETCH")
        with pytest.raises(PolicyError) as e:
            Sandbox(
                presets=["system"],
                http_allow=["GET h.test"],
                credentials={"tok": "env:SL_PY_TOKEN"},
                pass_env=["SL_PY_TOKEN"],
            )
        assert e.value.field == "pass_env[0]"
    finally:
        server.shutdown()
        server.server_close()


def test_an_injected_ca_is_in_the_bundle_the_sandbox_reads(workspace: str) -> None:
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    if not os.path.exists(bundle):
        pytest.skip(f"{bundle} is missing")
    with open(bundle, "rb") as f:
        host = f.read()
    marker = b"-----BEGIN CERTIFICATE-----"
    code = "import sys; print(open(sys.argv[1], 'rb').read().count(b'-----BEGIN CERTIFICATE-----'))"
    fields = dict(presets=["system"], fs_writable=[workspace], http_allow=["GET allowed.test"])
    r = Sandbox(http_inject_ca=bundle, **fields).run(["python3", "-c", code, bundle])
    assert r.stdout.decode().strip() == str(host.count(marker) + 1), r.stderr
    with open(bundle, "rb") as f:
        assert f.read() == host
    # Control: without it the sandbox reads the host's bundle as it is.
    r = Sandbox(**fields).run(["python3", "-c", code, bundle])
    assert r.stdout.decode().strip() == str(host.count(marker)), r.stderr
    missing = os.path.join(workspace, "missing.pem")
    with pytest.raises(PolicyError) as e:
        Sandbox(http_inject_ca=missing, **fields)
    assert (e.value.field, e.value.value) == ("http_inject_ca", missing)
    with pytest.raises(PolicyError) as e:
        Sandbox(presets=["system"], http_inject_ca=bundle)
    assert e.value.field == "http_inject_ca"
