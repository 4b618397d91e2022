"""deploy/kubernetes: every manifest validates strictly against the Kubernetes schemas (offline,
with `kubernetes-validate`), every pod has the restricted security context, and the shipped TOML
configuration starts the server."""

from __future__ import annotations

import shutil
import tempfile
import tomllib
from pathlib import Path

import httpx2
import pytest

from conftest import REPO, Server

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
            for k, v in RESTRICTED_CONTAINER.items():
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
