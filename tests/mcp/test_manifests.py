"""deploy/kubernetes: every manifest validates strictly against the Kubernetes schemas (offline,
with `kubernetes-validate`), every pod has the restricted security context, and the shipped TOML
configuration starts the server."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path

import httpx2
import pytest

from conftest import BIN, REPO, Server, wrap

yaml = pytest.importorskip(
    "yaml", reason="skipped: PyYAML missing (pip install -r tests/mcp/requirements.txt)"
)

MANIFESTS = sorted((REPO / "deploy/kubernetes").glob("*.yaml"))
VERSIONS = ["1.30", "1.37"]


def docs() -> list[tuple[str, dict]]:
    out = []
    for p in MANIFESTS:
        for d in yaml.safe_load_all(p.read_text()):
            if d:
                out.append((p.name, d))
    return out


def test_there_are_manifests() -> None:
    kinds = {d["kind"] for _, d in docs()}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap", "Secret"} <= kinds


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_validate_strictly(version: str) -> None:
    kv = pytest.importorskip(
        "kubernetes_validate", reason="skipped: pip install -r tests/mcp/requirements.txt"
    )
    for name, d in docs():
        try:
            kv.validate(d, version, strict=True)
        except kv.ValidationError as e:
            pytest.fail(f"{name}: {d['kind']}/{d['metadata']['name']}: {e}")


def test_a_typo_would_be_caught() -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="skipped: kubernetes-validate missing")
    _, d = next((n, d) for n, d in docs() if d["kind"] == "Deployment")
    d["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFs"] = True
    with pytest.raises(kv.ValidationError):
        kv.validate(d, "1.30", strict=True)


RESTRICTED_CONTAINER = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
# What the Pod Security Standard "restricted" asks of every container; an application beside
# sandlock (LobeHub) keeps its own user and may need a writable root filesystem.
PSS_RESTRICTED = {
    k: v
    for k, v in RESTRICTED_CONTAINER.items()
    if k not in ("runAsUser", "readOnlyRootFilesystem")
}


def test_every_pod_is_restricted_with_tmp_on_an_empty_dir() -> None:
    pods = [(n, d["spec"]["template"]["spec"]) for n, d in docs() if d["kind"] == "Deployment"]
    assert pods
    for name, pod in pods:
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 1000, name
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        containers = pod["containers"] + pod.get("initContainers", [])
        for c in containers:
            sc = c["securityContext"]
            wanted = RESTRICTED_CONTAINER if "sandlock" in c["image"] else PSS_RESTRICTED
            for k, v in wanted.items():
                assert sc.get(k) == v, f"{name}: {c['name']}: securityContext.{k}"
        sandlock = [c for c in containers if "sandlock" in c["image"]]
        assert sandlock, name
        empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for c in sandlock:
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert mounts.get("/tmp") in empty_dirs, f"{name}: /tmp is not an emptyDir"
            assert c.get("resources", {}).get("limits", {}).get("memory"), name
            probes = {p for p in ("startupProbe", "livenessProbe", "readinessProbe") if p in c}
            assert {"startupProbe", "livenessProbe"} <= probes, name


def test_shipped_config_starts_the_server() -> None:
    # Not pytest's tmp_path: under podsim the server (uid 1000) must be able to read the files.
    tmp_path = Path(tempfile.mkdtemp(prefix="sandlock-mcp-conf-"))
    cm = next(d for _, d in docs() if d["kind"] == "ConfigMap")
    cfg = tomllib.loads(cm["data"]["config.toml"])
    # Point the pod's paths at this machine; everything else is used as shipped.
    token = tmp_path / "token"
    token.write_text("a-test-token-0123456789")
    token.chmod(0o644)
    cfg["server"]["auth_token_file"] = str(token)
    cfg["server"]["listen"] = "127.0.0.1:0"  # the flag below picks the port
    del cfg["python"]["interpreter"]
    cfg["workspaces"].pop("root")
    lines = []
    for table, values in cfg.items():
        if table == "tools":
            for tool, pol in values.items():
                lines.append(f"[tools.{tool}]")
                lines += [f"{k} = {toml_value(v)}" for k, v in pol.items()]
            continue
        lines.append(f"[{table}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    conf = tmp_path / "config.toml"
    conf.write_text("\n".join(lines) + "\n")
    conf.chmod(0o644)
    tmp_path.chmod(0o755)
    s = Server("--config", str(conf), token=None)
    try:
        assert httpx2.get(s.base + "/readyz", timeout=30).status_code == 200
        ok = {"Authorization": "Bearer a-test-token-0123456789"}
        r = httpx2.post(s.url, headers=ok, timeout=10)
        assert r.status_code != 401  # the token from the file is required and accepted
        assert httpx2.post(s.url, timeout=10).status_code == 401
    finally:
        s.stop()
        shutil.rmtree(tmp_path, ignore_errors=True)


def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return '"' + str(v).replace('"', '\\"') + '"'


def lobehub_pod() -> dict:
    return next(
        d["spec"]["template"]["spec"]
        for n, d in docs()
        if n == "lobehub-sidecar.yaml" and d["kind"] == "Deployment"
    )


def test_lobehub_reaches_its_sandlock_sidecar_with_the_shared_key() -> None:
    pod = lobehub_pod()
    (sidecar,) = pod["initContainers"]
    (lobehub,) = pod["containers"]
    flags = dict(a.split("=", 1) for a in sidecar["args"][1:])
    env = {e["name"]: e for e in lobehub["env"]}
    assert env["SANDBOX_PROVIDER"]["value"] == "onlyboxes"
    assert env["ONLYBOXES_BASE_URL"]["value"] == "http://" + flags["--listen"]
    key_ref = env["ONLYBOXES_JIT_SIGNING_KEY"]["valueFrom"]["secretKeyRef"]
    key_dir, key_name = flags["--onlyboxes-jit-key-file"].rsplit("/", 1)
    mount = next(m for m in sidecar["volumeMounts"] if m["mountPath"] == key_dir)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == key_ref["name"] and key_name == key_ref["key"]
    assert flags["--listen"].startswith("127.0.0.1:"), "the sidecar must not listen beyond the pod"


def test_lobehub_sidecar_args_start_the_server_and_the_placeholder_key_is_refused() -> None:
    pod = lobehub_pod()
    (sidecar,) = pod["initContainers"]
    secret = next(d for n, d in docs() if n == "lobehub-sidecar.yaml" and d["kind"] == "Secret")
    tmp_path = Path(tempfile.mkdtemp(prefix="sandlock-obx-conf-"))
    tmp_path.chmod(0o755)
    placeholder = tmp_path / "placeholder"
    placeholder.write_text(secret["stringData"]["key"])
    good = tmp_path / "key"
    good.write_text("0123456789abcdef" * 4)
    for f in (placeholder, good):
        f.chmod(0o644)
    # The pod's flags, with this machine's paths and a port the test picks.
    local = {"--listen", "--workspace-root", "--python", "--onlyboxes-jit-key-file", "--log-format"}
    args = [a for a in sidecar["args"][1:] if a.split("=", 1)[0] not in local]
    try:
        r = subprocess.run(
            wrap(
                [
                    str(BIN),
                    "mcp",
                    *args,
                    f"--onlyboxes-jit-key-file={placeholder}",
                    f"--workspace-root={tmp_path / 'ws'}",
                ]
            ),
            capture_output=True,
            check=False,
            text=True,
            timeout=60,
        )
        assert r.returncode != 0 and "onlyboxes.jit_key_file" in r.stderr, r.stderr
        s = Server(*args, f"--onlyboxes-jit-key-file={good}", token=None)
        try:
            assert httpx2.get(s.base + "/readyz", timeout=30).status_code == 200
            api = s.base + "/api/v1/commands/terminal"
            r = httpx2.post(api, json={"command": "id"}, timeout=10)
            assert r.status_code == 401  # the API is on, and wants a JIT token
        finally:
            s.stop()
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)
