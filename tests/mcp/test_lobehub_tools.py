"""LobeHub's Cloud Sandbox tools, end to end, as LobeHub runs them through the provider API.

LobeHub runs every tool as shell: file tools are `python3 - <<'PY'` scripts that take their
arguments as base64 JSON and print JSON; `executeCode` writes the code to
`/tmp/lobe-code-<ts>.<ext>` and runs `python3` or `node` on it; uploaded files are fetched into
`/mnt/data` with `curl -fsSL` of presigned URLs; skills are zip archives fetched with curl and
unpacked with `unzip`. The scripts below are written here from that behaviour.

Each tool runs twice: in the session's working directory, and at the absolute paths LobeHub uses
(`/mnt/data`, `/tmp`), which every session sees through its filesystem view.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import secrets
import shutil
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from onlyboxes import Provider, Storage

PRELUDE = """
import base64, json, os
from pathlib import Path

def args_of(encoded):
    return json.loads(base64.b64decode(encoded).decode())

def reply(value):
    print(json.dumps(value, ensure_ascii=False))
"""

SCRIPTS = {
    "prepare_write": """
def main(encoded):
    a = args_of(encoded)
    p = Path(a['path'])
    if a.get('createDirectories'):
        p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b'')
    reply({'success': True})
""",
    "append_chunk": """
def main(encoded):
    a = args_of(encoded)
    data = base64.b64decode(a.get('chunk') or '')
    with Path(a['path']).open('ab') as f:
        f.write(data)
    reply({'success': True, 'bytesWritten': len(data)})
""",
    "read": """
def main(encoded):
    a = args_of(encoded)
    text = Path(a['path']).read_text(errors='replace')
    lines = text.splitlines(True)
    start, end = a.get('startLine'), a.get('endLine')
    if start is not None or end is not None:
        lines = lines[max((start or 1) - 1, 0):end]
    content = ''.join(lines)
    reply({'content': content, 'totalLineCount': len(text.splitlines()),
           'charCount': len(content)})
""",
    "edit": """
def main(encoded):
    a = args_of(encoded)
    p = Path(a['path'])
    text = p.read_text()
    n = text.count(a['search'])
    if n == 0:
        reply({'success': False, 'error': 'search text not found'})
        return
    count = -1 if a.get('all') else 1
    p.write_text(text.replace(a['search'], a['replace'], count))
    reply({'success': True, 'replacements': n if a.get('all') else 1})
""",
    "list": """
def main(encoded):
    a = args_of(encoded)
    entries = []
    for e in os.scandir(a.get('directoryPath') or '.'):
        entries.append({'name': e.name, 'isDirectory': e.is_dir(), 'size': e.stat().st_size})
    reply({'files': sorted(entries, key=lambda e: e['name']), 'totalCount': len(entries)})
""",
}

WRITE_CHUNK = 48 * 1024


@pytest.fixture(scope="module")
def obx() -> Iterator[Provider]:
    p = Provider("--max-concurrent", "4")
    yield p
    p.stop()


@pytest.fixture(params=["working directory", "session paths"])
def where(request, obx: Provider) -> dict[str, str]:
    """Where files and code go: relative to the working directory, or at LobeHub's own paths."""
    if request.param == "session paths":
        assert obx.views(), "sessions have no private /tmp and /mnt/data (metadata)"
        return {"data": "/mnt/data", "tmp": "/tmp"}
    return {"data": ".", "tmp": "."}


def session() -> str:
    return f"lobe-user_{secrets.token_hex(3)}-topic_{secrets.token_hex(3)}"


def run_script(obx: Provider, s: str, name: str, args: dict) -> dict:
    """Runs a file tool the way LobeHub does: a heredoc script with base64 JSON arguments."""
    encoded = base64.b64encode(json.dumps(args).encode()).decode()
    command = f"python3 - <<'PY'\n{PRELUDE}\n{SCRIPTS[name]}\nmain('{encoded}')\nPY"
    body = obx.client.run(command, s, timeout_ms=120_000)
    return json.loads(body["stdout"])


def write_file(obx: Provider, s: str, path: str, content: bytes, mkdirs: bool = True) -> int:
    assert run_script(obx, s, "prepare_write", {"path": path, "createDirectories": mkdirs})[
        "success"
    ]
    written = 0
    for i in range(0, len(content), WRITE_CHUNK):
        chunk = base64.b64encode(content[i : i + WRITE_CHUNK]).decode()
        written += run_script(obx, s, "append_chunk", {"path": path, "chunk": chunk})[
            "bytesWritten"
        ]
    return written


def test_write_read_edit_and_list_files(obx: Provider, where: dict[str, str]):
    s = session()
    d = where["data"]
    text = "".join(f"line {i} ünïcode\n" for i in range(1, 8001))
    assert len(text.encode()) > 2 * WRITE_CHUNK
    assert write_file(obx, s, f"{d}/notes/long.txt", text.encode()) == len(text.encode())
    got = run_script(obx, s, "read", {"path": f"{d}/notes/long.txt"})
    assert got["content"] == text and got["totalLineCount"] == 8000
    page = run_script(obx, s, "read", {"path": f"{d}/notes/long.txt", "startLine": 3, "endLine": 4})
    assert page["content"] == "line 3 ünïcode\nline 4 ünïcode\n"
    edited = run_script(
        obx, s, "edit", {"path": f"{d}/notes/long.txt", "search": "line 5 ", "replace": "LINE 5 "}
    )
    assert edited == {"success": True, "replacements": 1}
    everywhere = run_script(
        obx,
        s,
        "edit",
        {"path": f"{d}/notes/long.txt", "search": "ünïcode", "replace": "u", "all": True},
    )
    assert everywhere["replacements"] == 8000
    missing = run_script(
        obx, s, "edit", {"path": f"{d}/notes/long.txt", "search": "absent", "replace": "x"}
    )
    assert missing["success"] is False
    head = run_script(obx, s, "read", {"path": f"{d}/notes/long.txt", "endLine": 5})
    assert head["content"].splitlines()[4] == "LINE 5 u"
    write_file(obx, s, f"{d}/b.csv", b"a,b\n1,2\n")
    listing = run_script(obx, s, "list", {"directoryPath": d})
    names = {e["name"]: e for e in listing["files"]}
    assert names["notes"]["isDirectory"] is True
    assert names["b.csv"] == {"name": "b.csv", "isDirectory": False, "size": 8}


@pytest.mark.parametrize(
    "language,runner,ext,code,expected",
    [
        (
            "python",
            "python3",
            "py",
            "import sys\nprint(sum(range(10)), sys.version_info[0])\n",
            "45 3",
        ),
        (
            "javascript",
            "node",
            "js",
            "const xs = [1, 2, 3];\nconsole.log(xs.map((x) => x * 2).join(','));\n",
            "2,4,6",
        ),
    ],
)
def test_execute_code(obx: Provider, where: dict[str, str], language, runner, ext, code, expected):
    if shutil.which(runner) is None:
        pytest.skip(f"SKIP: {runner} is not installed on this machine")
    s = session()
    path = f"{where['tmp']}/lobe-code-{int(time.time() * 1000)}.{ext}"
    write_file(obx, s, path, code.encode())
    body = obx.client.run(f"{runner} '{path}'", s, timeout_ms=120_000)
    assert body["stdout"].strip() == expected, (language, body)
    # An error in the code is the code's exit status and traceback, not a failed call.
    broken = f"{where['tmp']}/lobe-code-{int(time.time() * 1000) + 1}.{ext}"
    write_file(obx, s, broken, b"this is not valid code (\n")
    status, body = obx.client.terminal(f"{runner} '{broken}'", s)
    assert status == 200 and body["exit_code"] != 0 and "Error" in body["stderr"], body


def uploads_command(d: str, files: dict[str, str]) -> str:
    """LobeHub's uploaded-file sync: each file fetched once per session, failures tolerated."""
    marker = f"{d}/.lobe-files-initialized"
    fetches = "; ".join(
        f"curl -fsSL '{url}' -o '{d}/{name}' || true" for name, url in files.items()
    )
    return f"mkdir -p '{d}'; if [ ! -f '{marker}' ]; then {fetches}; touch '{marker}'; fi"


def test_uploaded_files_are_synced_with_curl_from_the_storage_host(
    obx: Provider, where: dict[str, str]
):
    if shutil.which("curl") is None:
        pytest.skip("SKIP: curl is not installed on this machine")
    s = session()
    data = secrets.token_bytes(200_000)
    obx.storage.blobs["/uploads/data.bin"] = data
    obx.storage.blobs["/uploads/table.csv"] = b"x,y\n1,2\n"
    files = {
        "data.bin": obx.storage.url("/uploads/data.bin?X-Amz-Signature=s1"),
        "table.csv": obx.storage.url("/uploads/table.csv?X-Amz-Signature=s2"),
        "gone.txt": obx.storage.url("/uploads/gone.txt?X-Amz-Signature=s3"),
    }
    d = where["data"] if where["data"] != "." else "uploads"
    obx.client.run(uploads_command(d, files), s)
    body = obx.client.run(f"sha256sum '{d}/data.bin'; cat '{d}/table.csv'; ls -a '{d}'", s)
    assert hashlib.sha256(data).hexdigest() in body["stdout"]
    assert "x,y\n1,2\n" in body["stdout"]
    assert "gone.txt" not in body["stdout"] and ".lobe-files-initialized" in body["stdout"]
    # The control: anything but the storage host is out of reach (here, this server's own port).
    port = obx.server.base.rsplit(":", 1)[1]
    status, body = obx.client.terminal(f"curl -fsS --max-time 5 http://127.0.0.1:{port}/healthz", s)
    assert status == 200 and body["exit_code"] != 0, body
    assert "ok" not in body["stdout"]


def test_uploads_by_host_name_resolve_inside_the_sandbox():
    if shutil.which("curl") is None:
        pytest.skip("SKIP: curl is not installed on this machine")
    hosts = Path("/etc/hosts").read_text()
    if "allowed.test" not in hosts or "other.test" not in hosts:
        pytest.skip(
            "SKIP: /etc/hosts does not map allowed.test and other.test (scripts/test.sh does)"
        )
    storage = Storage(bind="127.0.0.2", name="allowed.test")
    other = Storage(bind="127.0.0.3", name="other.test")
    p = Provider(storage=storage)
    try:
        s = session()
        storage.blobs["/f.txt"] = b"by name\n"
        other.blobs["/f.txt"] = b"must not arrive\n"
        body = p.client.run(f"curl -fsSL 'http://{storage.host}/f.txt'", s)
        assert body["stdout"] == "by name\n"
        for url in (f"http://{other.host}/f.txt", f"http://127.0.0.3:{other.port}/f.txt"):
            status, body = p.client.terminal(f"curl -fsS --max-time 5 '{url}'", s)
            assert status == 200 and body["exit_code"] != 0, (url, body)
            assert "must not arrive" not in body["stdout"]
    finally:
        p.stop()
        other.close()


def test_skill_archives_are_fetched_and_unzipped(obx: Provider, where: dict[str, str]):
    for tool in ("curl", "unzip"):
        if shutil.which(tool) is None:
            pytest.skip(f"SKIP: {tool} is not installed on this machine")
    s = session()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("SKILL.md", "# Greeter\n")
        z.writestr("scripts/greet.py", "import sys\nprint('hello from the skill', sys.argv[1])\n")
    obx.storage.blobs["/skills/greeter.zip"] = archive.getvalue()
    url = obx.storage.url("/skills/greeter.zip?X-Amz-Signature=z")
    base = f"{where['tmp']}/lobe-skills/{secrets.token_hex(8)}"
    skill = f"{base}/greeter"
    marker = f"{skill}/.prepared"
    setup = (
        f"mkdir -p '{base}' && if [ ! -f '{marker}' ]; then rm -rf '{skill}' && "
        f"mkdir -p '{skill}' && curl -fsSL '{url}' -o '{skill}/skill.zip' && "
        f"unzip -q '{skill}/skill.zip' -d '{skill}' && printf prepared > '{marker}'; fi"
    )
    obx.client.run(setup, s)
    body = obx.client.run(f"cd '{skill}' && python3 scripts/greet.py world && cat SKILL.md", s)
    assert body["stdout"] == "hello from the skill world\n# Greeter\n"
    # Prepared once: running the set-up again fetches nothing.
    del obx.storage.blobs["/skills/greeter.zip"]
    obx.client.run(setup, s)


def test_a_background_command_is_read_and_killed_like_lobehub_does(obx: Provider):
    c = obx.client
    s = session()
    status, task = c.background("i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done", s)
    assert status == 202 and task["task_id"], task
    deadline = time.monotonic() + 10
    while True:
        status, snap = c.task(task["task_id"])
        running = snap["status"] in ("pending", "dispatched", "running")
        if running and "tick 2" in snap["result"]["stdout"]:
            break
        assert running and time.monotonic() < deadline, snap
        time.sleep(0.1)
    status, killed = c.cancel(task["task_id"])
    assert status == 200 and "error" not in killed, killed
    status, snap = c.task(task["task_id"])
    assert snap["status"] == "canceled"


def test_what_the_tools_need_to_start_is_in_the_default_policy(obx: Provider):
    """python3, node, curl (with the trust store for https, and the resolver's files) and unzip."""
    s = session()
    needs = {
        "python3": "python3 -c 'import json, ssl, sqlite3; print(ssl.OPENSSL_VERSION)'",
        "node": "node -e 'console.log(process.version, require(\"os\").totalmem() > 0)'",
        "curl": "curl --version | head -1",
        "unzip": "unzip -v | head -1",
    }
    for tool, command in needs.items():
        if shutil.which(tool) is None:
            continue
        status, body = obx.client.terminal(command, s)
        assert status == 200 and body["exit_code"] == 0, (tool, body)
    bundle = next(
        (
            p
            for p in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")
            if Path(p).exists()
        ),
        None,
    )
    if bundle:
        body = obx.client.run(f"head -c 27 {bundle}; test -r /etc/resolv.conf", s)
        assert body["stdout"].startswith("-----BEGIN CERTIFICATE-----"), body
    # The control: the rest of /etc is not there.
    status, body = obx.client.terminal("cat /etc/shadow", s)
    assert status == 200 and body["exit_code"] != 0, body
