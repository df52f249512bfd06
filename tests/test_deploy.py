"""The deploy kit checked offline: the Kubernetes manifests rendered as
`kubectl kustomize` does and validated against the Kubernetes API schemas
(kubernetes-validate), and the systemd unit verified by systemd-analyze.
The Docker image runs on a real engine in test_image.py, the Swarm stack on
a real Swarm node in the VM (tests/kernel/test_swarm_vm.py)."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from . import kustomize

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy/kubernetes"
UNIT = ROOT / "deploy/systemd/ipvs-fast-exporter.service"
K8S_VERSION = "1.30.0"       # oldest minor still supported upstream when this was written
PORT = 9911


def render(name: str) -> dict:
    objs = kustomize.build(K8S / name if name else K8S)
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


@pytest.fixture(scope="module", params=["", "prometheus-operator"])
def rendered(request):
    return render(request.param)


def test_every_object_validates_against_the_api_schema(rendered):
    for (kind, name), obj in rendered.items():
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue                      # a CRD: checked against the Service below
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{kind}/{name}: {e.message} at {list(e.path)}")


def test_validation_catches_a_wrong_field():
    ds = render("")[("DaemonSet", "ipvs-fast-exporter")]
    ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFS"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSION, strict=True)


def test_daemonset_is_least_privilege_on_the_host_network():
    objs = render("")
    ds = objs[("DaemonSet", "ipvs-fast-exporter")]
    assert ds["metadata"]["namespace"] == "monitoring"
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and not pod.get("hostPID") and not pod.get("volumes")
    assert pod["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in pod["tolerations"]
    assert pod["securityContext"]["runAsUser"] == 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert c["image"] == "ipvs-fast-exporter:0.1.0"
    # own (host) namespace, on a port that is not node_exporter's
    assert "--namespace-path=" in c["args"] and f"--listen-address=:{PORT}" in c["args"]
    assert c["ports"] == [{"name": "metrics", "containerPort": PORT, "hostPort": PORT,
                           "protocol": "TCP"}]
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    ann = ds["spec"]["template"]["metadata"]["annotations"]
    assert ann == {"prometheus.io/scrape": "true", "prometheus.io/port": str(PORT),
                   "prometheus.io/path": "/metrics"}


def mebibytes(q: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    return float(q[:-2]) * units[q[-2:]]


def measured_rss_mb() -> dict:
    """Peak RSS per backend at 10,000 x 10 from bench/README.md's memory table."""
    text = (ROOT / "bench/README.md").read_text()
    rows = re.findall(r"^\| (native|python) \| (\d+) MB \| (\d+) MB \|", text, re.M)
    assert {r[0] for r in rows} == {"native", "python"}, rows
    return {backend: max(int(before), int(hwm)) for backend, before, hwm in rows}


def test_memory_request_and_limit_follow_the_measured_10k_table():
    c = render("")[("DaemonSet", "ipvs-fast-exporter")]["spec"]["template"]["spec"]["containers"][0]
    rss = measured_rss_mb()
    request = mebibytes(c["resources"]["requests"]["memory"]) * 1.048576   # MiB -> MB
    limit = mebibytes(c["resources"]["limits"]["memory"]) * 1.048576
    # the request covers the C core at 10k x 10; the limit also the Python backend, with room
    assert rss["native"] <= request < rss["python"] * 1.2, (request, rss)
    assert limit >= 1.3 * rss["python"], (limit, rss)


def test_service_and_servicemonitor_select_the_daemonset_pods():
    objs = render("prometheus-operator")
    pod_labels = objs[("DaemonSet", "ipvs-fast-exporter")]["spec"]["template"]["metadata"]["labels"]
    svc = objs[("Service", "ipvs-fast-exporter")]
    sm = objs[("ServiceMonitor", "ipvs-fast-exporter")]
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    port_names = {p["name"] for p in svc["spec"]["ports"]}
    assert {e["port"] for e in sm["spec"]["endpoints"]} <= port_names
    assert svc["spec"]["ports"][0]["port"] == PORT
    assert sm["metadata"]["namespace"] == svc["metadata"]["namespace"] == "monitoring"


def test_renderer_refuses_fields_it_does_not_implement(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: []\npatches: []\n")
    with pytest.raises(kustomize.KustomizeError, match="patches"):
        kustomize.build(tmp_path)


def test_rendering_matches_kubectl_kustomize_where_kubectl_exists():
    """kubectl is not installed by setup-env.sh; where a machine has it, its
    rendering must equal ours."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    for name in ("", "prometheus-operator"):
        out = subprocess.run([kubectl, "kustomize", str(K8S / name)], capture_output=True,
                             text=True, check=True).stdout
        theirs = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(out)}
        assert theirs == render(name)


# -- systemd ------------------------------------------------------------------

def unit_settings() -> dict:
    settings = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def verify(unit_text: str, tmp_path) -> str:
    """systemd-analyze verify of the unit with ExecStart pointed at this venv's
    exporter (the unit names /opt/ipvs-fast, the README's install path, which
    this machine does not have). Returns every complaint; verify exits 0 on
    unknown keys and bad values, so they are read from its output."""
    exe = shutil.which("ipvs-fast-exporter", path=str(Path(sys.executable).parent))
    assert exe, "ipvs-fast-exporter not installed in the venv"
    text = unit_text.replace("ExecStart=/opt/ipvs-fast/bin/ipvs-fast-exporter", f"ExecStart={exe}")
    path = tmp_path / "ipvs-fast-exporter.service"
    path.write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(path)],
                       capture_output=True, text=True)
    return (r.stdout + r.stderr).strip() + ("" if r.returncode == 0 else f"\nexit {r.returncode}")


def test_systemd_unit_verifies_cleanly(tmp_path):
    assert unit_settings()["ExecStart"] == ["/opt/ipvs-fast/bin/ipvs-fast-exporter"]
    assert verify(UNIT.read_text(), tmp_path) == ""
    # and the check notices a broken unit
    assert "bogus" in verify(UNIT.read_text().replace("ProtectSystem=strict",
                                                      "ProtectSystem=bogus"), tmp_path)


def test_systemd_unit_is_least_privilege():
    s = unit_settings()
    assert s["DynamicUser"] == ["yes"] and s["NoNewPrivileges"] == ["yes"]
    assert s["AmbientCapabilities"] == ["CAP_NET_ADMIN"]
    assert s["CapabilityBoundingSet"] == ["CAP_NET_ADMIN"]
    assert s["ProtectSystem"] == ["strict"]
    assert "PrivateNetwork" not in s and "PrivateUsers" not in s
    assert s["EnvironmentFile"] == ["-/etc/default/ipvs-fast-exporter"]
    env = (ROOT / "deploy/systemd/ipvs-fast-exporter.env").read_text()
    names = re.findall(r"^#?(IPVS_FAST_\w+)=", env, re.M)
    assert names and all(n.startswith("IPVS_FAST_") for n in names)


def test_systemd_env_file_is_accepted_by_the_exporter(monkeypatch):
    """The example environment file, as systemd hands it over, parses."""
    from ipvs_fast.cli import parse_args
    for line in (ROOT / "deploy/systemd/ipvs-fast-exporter.env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            monkeypatch.setenv(key, value)
    args = parse_args([])
    assert args.listen_address == [f":{PORT}"]
    assert args.namespace_path == [""]


def test_systemd_security_exposure_matches_the_readme():
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(UNIT)],
                       capture_output=True, text=True)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    readme = (ROOT / "README.md").read_text()
    assert f"`systemd-analyze security`: {m.group(1)}" in readme, m.group(1)


def test_swarm_stack_names_services_through_the_read_only_socket(monkeypatch):
    """The stack's command parses, asks the node's engine for Swarm names
    (--docker.host on the socket it mounts read-only) and keeps reading the
    routing mesh and every lb_* namespace. (Run on a real Swarm in the VM:
    tests/kernel/test_swarm_vm.py.)"""
    from ipvs_fast.cli import parse_args
    for key in [k for k in os.environ if k.startswith("IPVS_FAST_")]:
        monkeypatch.delenv(key)
    stack = yaml.safe_load((ROOT / "deploy/swarm/stack.yml").read_text())
    svc = stack["services"]["exporter"]
    args = parse_args(svc["command"])
    assert args.docker_host == "unix:///var/run/docker.sock"
    assert args.namespace_path == ["/var/run/docker/netns/ingress_sbox",
                                   "/var/run/docker/netns/lb_*"]
    sock = [v for v in svc["volumes"] if v["target"] == "/var/run/docker.sock"]
    assert sock == [{"type": "bind", "source": "/var/run/docker.sock",
                     "target": "/var/run/docker.sock", "read_only": True}]
    assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
    assert sorted(svc["cap_add"]) == ["NET_ADMIN", "SYS_ADMIN"]
