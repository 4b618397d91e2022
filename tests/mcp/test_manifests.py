"""deploy/kubernetes: every manifest validates strictly against the Kubernetes schemas (offline,
with `kubernetes-validate`), every pod has the restricted security context, the shipped TOML
configuration starts the server, and the StatefulSet and its HAProxy agree on the replicas' names
and route as deploy/haproxy/haproxy.cfg does."""

from __future__ import annotations

import os
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
    assert {
        "Deployment",
        "StatefulSet",
        "Service",
        "HorizontalPodAutoscaler",
        "ConfigMap",
        "Secret",
    } <= kinds


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
    pods = [
        (n, d["spec"]["template"]["spec"])
        for n, d in docs()
        if d["kind"] in ("Deployment", "StatefulSet")
    ]
    assert len(pods) >= 4
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
        for c in containers:
            assert c.get("resources", {}).get("limits", {}).get("memory"), f"{name}: {c['name']}"
        sandlock = [c for c in containers if "sandlock" in c["image"]]
        if not sandlock:
            assert name == "haproxy.yaml", f"{name}: no sandlock container"
            continue
        empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for c in sandlock:
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert mounts.get("/tmp") in empty_dirs, f"{name}: /tmp is not an emptyDir"
            probes = {p for p in ("startupProbe", "livenessProbe", "readinessProbe") if p in c}
            assert {"startupProbe", "livenessProbe"} <= probes, name


def test_shipped_config_starts_the_server() -> None:
    # Not pytest's tmp_path: under podsim the server (uid 1000) must be able to read the files.
    tmp_path = Path(tempfile.mkdtemp(prefix="sandlock-mcp-conf-"))
    cm = manifest("ConfigMap", "sandlock-mcp")
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


def manifest(kind: str, name: str) -> dict:
    return next(d for _, d in docs() if d["kind"] == kind and d["metadata"]["name"] == name)


def routing_rules(cfg: str) -> dict[str, list[str]]:
    """The rules of the sections that route: everything but comments, servers and how servers are
    found (addresses differ between a host and a cluster; the rules must not)."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in cfg.splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if not line[0].isspace():
            current = text if text in ("defaults", "frontend mcp", "backend sandlock_mcp") else None
            if current:
                sections[current] = []
        elif current and not text.startswith(("server ", "default-server ")):
            sections[current].append(text)
    return sections


def test_statefulset_and_its_proxy_agree_and_route_as_the_shipped_haproxy_config() -> None:
    sts = manifest("StatefulSet", "sandlock")
    headless = manifest("Service", sts["spec"]["serviceName"])
    proxy = manifest("Deployment", "sandlock-mcp-proxy")
    cfg = manifest("ConfigMap", "sandlock-mcp-proxy")["data"]["haproxy.cfg"]
    shipped = (REPO / "deploy/haproxy/haproxy.cfg").read_text()

    # Each pod's --replica-id is its name, from the downward API.
    c = sts["spec"]["template"]["spec"]["containers"][0]
    assert "--replica-id=$(POD_NAME)" in c["args"]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # The replicas accept the Host header clients send to the proxy's Service.
    assert "--allowed-host=sandlock-mcp-proxy.agents.svc" in c["args"]
    assert manifest("Service", "sandlock-mcp-proxy")["spec"].get("sessionAffinity") is None

    # HAProxy has one server per pod name, at the pod's DNS name under the headless Service.
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    servers = [line.split() for line in cfg.splitlines() if line.strip().startswith("server ")]
    name, service = sts["metadata"]["name"], headless["metadata"]["name"]
    assert [s[1] for s in servers] == [f"{name}-{i}" for i in range(len(servers))]
    assert sts["spec"]["replicas"] <= len(servers)
    for s in servers:
        addr = f'"{s[1]}.{service}.${{POD_NAMESPACE}}.svc.cluster.local:8080"'
        assert s[2] == addr, s
    penv = {e["name"]: e for e in proxy["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert penv["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"

    # The same routing rules as the file tests/mcp/test_scaleout.py runs.
    assert routing_rules(cfg) == routing_rules(shipped)
    assert len(routing_rules(shipped)["backend sandlock_mcp"]) >= 8

    haproxy = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    if haproxy is None:
        pytest.skip("skipped: haproxy is not installed, so its check of the file did not run")
    with tempfile.NamedTemporaryFile("w", suffix=".cfg") as f:
        f.write(cfg)
        f.flush()
        r = subprocess.run(
            [haproxy, "-c", "-f", f.name],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "POD_NAMESPACE": "agents"},
        )
    assert r.returncode == 0, r.stdout + r.stderr


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
