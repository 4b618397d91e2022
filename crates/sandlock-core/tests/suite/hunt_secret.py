"""Looks for a secret everywhere a sandbox can look, given only its SHA-256.

    python3 hunt_secret.py SHA256 CREDENTIAL_FILE WORKSPACE

The secret has the form sl-secret-<32 hex digits>. Searched: the environment, /proc/self
(environ, cmdline and the process's own memory), the parent's (the supervisor's, which holds
the secret) environ, cmdline and memory, the credential file, and every file under WORKSPACE.
Prints where it was found (space-separated, sorted), or "nowhere".
"""

import hashlib
import os
import re
import sys

want, cred_file, workspace = sys.argv[1], sys.argv[2], sys.argv[3]
found = set()


def check(where, data):
    for m in re.finditer(rb"sl-secret-[0-9a-f]{32}", data):
        if hashlib.sha256(m.group(0)).hexdigest() == want:
            found.add(where)


def read(where, path):
    try:
        with open(path, "rb") as f:
            check(where, f.read())
    except OSError:
        pass


def memory(where, pid):
    try:
        with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb") as mem:
            for line in maps:
                span, perms = line.split()[:2]
                if "r" not in perms:
                    continue
                lo, hi = (int(x, 16) for x in span.split("-"))
                try:
                    mem.seek(lo)
                    check(where, mem.read(min(hi - lo, 64 << 20)))
                except (OSError, ValueError, OverflowError):
                    pass
    except OSError:
        pass


check("env", b"\0".join(k.encode() + b"=" + v.encode() for k, v in os.environ.items()))
read("proc-environ", "/proc/self/environ")
read("proc-cmdline", "/proc/self/cmdline")
parent = os.getppid()
for name in ("environ", "cmdline"):
    read("parent-" + name, f"/proc/{parent}/{name}")
memory("parent-memory", parent)
read("credential-file", cred_file)
for root, _dirs, files in os.walk(workspace):
    for f in files:
        read("workspace", os.path.join(root, f))
memory("memory", "self")
print(" ".join(sorted(found)) or "nowhere")
