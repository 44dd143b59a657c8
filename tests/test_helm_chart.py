"""The Helm chart and the KServe manifests: lint, render, strict schema validation, and what the objects must agree on
with the code (deploy serve's options and endpoints, the project version, the autoscaling metric)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml

from deploy.cli import build_parser
from deploy.manifests import (
    CHART,
    KUBERNETES_VERSIONS,
    ManifestError,
    kserve_objects,
    lint,
    render,
    validate,
    value_sets,
)
from deploy.server import GRPC_ADMIN_HEADER, LIVE_PATH, READY_PATH, free_port, start_on_free_ports

ROOT = Path(__file__).resolve().parent.parent
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
CI = {p.stem: p for p in value_sets()}


def project_version() -> str:
    # [project]'s version line (tomllib is 3.11+, the project supports 3.10)
    return re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)


@pytest.fixture(scope="module")
def rendered():
    """Every values set rendered once: default values and each ci/*.yaml."""
    return {"default": render(), **{name: render(values_files=(path,)) for name, path in CI.items()}}


def _container(rendered_set, name: str = "triton") -> dict:
    pod = rendered_set.one("Deployment")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == name)


def _port(container: dict, name: str) -> int:
    return next(p["containerPort"] for p in container["ports"] if p["name"] == name)


def test_the_chart_has_the_value_sets_the_issue_asks_for():
    assert {"gpu-values", "hpa-off-values", "tls-values"} <= set(CI)


@pytest.mark.parametrize("values", [None, *CI], ids=lambda v: v or "default")
def test_chart_lints_strict(values):
    assert "0 chart(s) failed" in lint(values_files=() if values is None else (CI[values],))


@pytest.mark.parametrize("values", ["default", *CI])
def test_every_rendered_object_passes_strict_validation_for_kubernetes_1_29_to_1_33(rendered, values):
    assert KUBERNETES_VERSIONS == ("1.29", "1.30", "1.31", "1.32", "1.33")
    objects = rendered[values].objects
    assert {"Deployment", "Service"} <= {o["kind"] for o in objects}
    for obj in objects:
        validate(obj)


def test_strict_validation_rejects_unknown_fields_wrong_types_and_removed_apis(rendered):
    deployment = rendered["default"].one("Deployment")
    typo = yaml.safe_load(yaml.safe_dump(deployment))
    typo["spec"]["template"]["spec"]["containers"][0]["readynessProbe"] = {}
    with pytest.raises(ManifestError, match=r"Deployment mobilebert-mobilebert-triton is invalid for Kubernetes 1\.29"):
        validate(typo)
    wrong = yaml.safe_load(yaml.safe_dump(deployment))
    wrong["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8000"
    with pytest.raises(ManifestError, match="containerPort"):
        validate(wrong)
    hpa = dict(rendered["default"].one("HorizontalPodAutoscaler"), apiVersion="autoscaling/v2beta2")
    with pytest.raises(ManifestError, match="has no autoscaling/v2beta2 HorizontalPodAutoscaler"):
        validate(hpa)


def test_cpu_container_args_are_deploy_serve_options_listening_on_all_addresses(rendered):
    container = _container(rendered["default"])
    assert "command" not in container  # the image's entry point: python -m deploy serve
    args = build_parser().parse_args(["serve", *container["args"]])
    assert args.address == "0.0.0.0"
    assert str(args.repository) == VALUES["modelRepository"]["path"]
    assert (
        (args.http_port, args.grpc_port, args.metrics_port)
        == (
            _port(container, "http"),
            _port(container, "grpc"),
            _port(container, "metrics"),
        )
        == (8000, 8001, 8002)
    )
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert args.admin_key_file == Path(mounts["admin-key"]) / VALUES["adminKey"]["secretKey"]
    assert args.log_file.is_relative_to(mounts["tmp"])  # the root filesystem is read-only
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert mounts["dshm"] == "/dev/shm"


@pytest.mark.parametrize("values", ["default", "gpu-values"])
def test_probes_use_the_servers_health_paths_on_the_http_port(rendered, values):
    container = _container(rendered[values])
    probes = {k: container[k]["httpGet"] for k in ("startupProbe", "livenessProbe")}
    assert probes["startupProbe"]["path"] == READY_PATH
    assert probes["livenessProbe"]["path"] == LIVE_PATH
    assert {p["port"] for p in probes.values()} == {"http"}
    # readiness: an exec probe on the same port and the mounted repository (every model of build.json READY)
    command = container["readinessProbe"]["exec"]["command"]
    assert command[:2] == ["python3", "-c"] and command[3:] == [str(_port(container, "http")), "/models"]
    # The startup probe allows as long as deploy serve waits for READY (a 15 s model load is well inside).
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= VALUES["server"]["readyTimeoutSeconds"]


def test_probe_paths_answer_on_a_real_deploy_serve_started_with_the_charts_args(rendered, tmp_path):
    from test_server import _model  # the echo Python model of the server tests

    repo = tmp_path / "repo"
    _model(repo, "echo")
    key = tmp_path / "admin-key"
    key.write_text("s3cret\n")
    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    overrides = {
        "--repository": repo,
        "--admin-key-file": key,
        "--log-file": tmp_path / "serve.log",
        "--address": "127.0.0.1",  # the chart's 0.0.0.0, kept off this shared machine's other interfaces
        **{f"--{name}-port": port for name, port in ports.items()},
    }
    args = _container(rendered["default"])["args"]
    argv = [f"{a.split('=')[0]}={overrides[a.split('=')[0]]}" if a.split("=")[0] in overrides else a for a in args]
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy", "serve", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        assert "Triton is READY" in line, line or proc.stderr.read()
        base = f"http://127.0.0.1:{ports['http']}"
        for path in (READY_PATH, LIVE_PATH):
            with urllib.request.urlopen(base + path, timeout=5) as response:
                assert response.status == 200
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{ports['grpc']}")
        text = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
        text.set_data_from_numpy(np.array([[b"hello"]], dtype=object))
        client.infer("echo", [text])
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        rule = VALUES["autoscaling"]["queueTime"]["adapterRule"]
        series = set(re.findall(r"nv_[a-z_]+", rule["seriesQuery"] + rule["metricsQuery"]))
        assert series == {"nv_inference_queue_duration_us", "nv_inference_request_success"}
        for name in series:
            assert re.search(rf"^{name}{{.*model=\"echo\".*}} \d+", metrics, re.M), f"Triton does not export {name}"

        # the readiness probe's command, as the kubelet runs it (the chart's port and repository swapped for these)
        assert subprocess.run(_readiness_probe(rendered, ports["http"], repo), timeout=30).returncode == 0
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    assert proc.returncode == 0


def _readiness_probe(rendered, http_port: int, repository: Path) -> list[str]:
    """The chart's readiness command with this interpreter, port and repository (it checks build.json's models)."""
    command = _container(rendered["default"])["readinessProbe"]["exec"]["command"]
    if not (repository / "build.json").exists():
        (repository / "build.json").write_text(json.dumps({"models": sorted(p.name for p in repository.iterdir())}))
    return [sys.executable, command[1], command[2], str(http_port), str(repository)]


def test_readiness_probe_fails_when_a_model_is_unloaded_although_the_server_still_says_ready(rendered, tmp_path):
    from test_server import _model

    repo = tmp_path / "repo"
    for name in ("echo", "echo2"):
        _model(repo, name)
    with start_on_free_ports(repo, models=["echo", "echo2"], log_file=tmp_path / "server.log") as server:
        probe = _readiness_probe(rendered, server.config.http_port, repo)
        assert subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
        client = grpcclient.InferenceServerClient(server.grpc_url)
        client.unload_model("echo2", headers={GRPC_ADMIN_HEADER: server.admin_key})
        # Triton's strict readiness counts loaded models only: the server is unready while the model unloads (~1.5 s
        # here) and ready again once it is gone; the probe must stay failed
        deadline = time.monotonic() + 30
        while not client.is_server_ready():
            assert time.monotonic() < deadline, "the server never became ready again after the unload"
            time.sleep(0.2)
        assert not client.is_model_ready("echo2")
        failed = subprocess.run(probe, capture_output=True, text=True, timeout=30)
        assert failed.returncode != 0 and "/v2/models/echo2/ready" in failed.stderr, failed.stderr


def test_image_tags_are_the_project_version(rendered):
    version = project_version()
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == chart["version"] == version
    assert _container(rendered["default"])["image"] == f"localhost/mobilebert-triton:{version}"
    assert _container(rendered["gpu-values"])["image"] == f"localhost/mobilebert-triton-gpu:{version}"
    runtime = next(o for o in kserve_objects() if o["kind"] == "ServingRuntime")
    assert runtime["spec"]["containers"][0]["image"] == f"localhost/mobilebert-triton:{version}"


def test_hpa_scales_on_the_documented_adapter_metric_with_cpu_as_fallback(rendered):
    rule = VALUES["autoscaling"]["queueTime"]["adapterRule"]
    readme = (CHART / "README.md").read_text()
    documented = yaml.safe_load(re.search(r"```yaml\n(- seriesQuery.*?)```", readme, re.S).group(1))
    assert documented == [rule]
    hpa = rendered["default"].one("HorizontalPodAutoscaler")
    metrics = hpa["spec"]["metrics"]
    assert metrics[0]["pods"]["metric"]["name"] == rule["name"]["as"] == "avg_time_queue_us"
    assert metrics[1]["resource"] == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}
    assert hpa["spec"]["scaleTargetRef"]["name"] == rendered["default"].one("Deployment")["metadata"]["name"]
    assert "replicas" not in rendered["default"].one("Deployment")["spec"]  # the HPA owns the count
    cpu_only = rendered["tls-values"].one("HorizontalPodAutoscaler")["spec"]["metrics"]
    assert [m["type"] for m in cpu_only] == ["Resource"]


def test_hpa_off_gives_fixed_replicas_and_a_read_only_pvc_repository(rendered):
    objects = rendered["hpa-off-values"]
    assert not objects.of_kind("HorizontalPodAutoscaler") and not objects.of_kind("PodDisruptionBudget")
    deployment = objects.one("Deployment")
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "model-repository")
    assert volume["persistentVolumeClaim"] == {"claimName": "mobilebert-repository", "readOnly": True}
    mount = next(m for m in _container(objects)["volumeMounts"] if m["name"] == "model-repository")
    assert mount == {"name": "model-repository", "mountPath": "/models", "readOnly": True, "subPath": "triton_repo"}


def test_gpu_values_run_stock_tritonserver_with_the_gpu_profile_and_the_key_from_the_secret(rendered):
    objects = rendered["gpu-values"]
    container = _container(objects)
    assert container["command"] == ["tritonserver"]
    args = container["args"]
    assert "--model-config-name=gpu" in args and "--model-repository=/models" in args
    for name in ("http", "grpc", "metrics"):
        assert f"--{name}-port={_port(container, name)}" in args
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    secret = objects.one("Secret")
    assert env["ADMIN_KEY"] == {"name": secret["metadata"]["name"], "key": "admin-key"}
    assert any(a.endswith(":admin-key=$(ADMIN_KEY)") and "model-repository" in a for a in args)
    stock_cpu = _container(rendered["stock-cpu-values"])
    assert "--model-config-name=stock-cpu" in stock_cpu["args"]
    assert "nvidia.com/gpu" not in stock_cpu["resources"]["limits"]


def test_tls_values_mount_the_certificate_secret_and_require_client_certificates(rendered):
    objects = rendered["tls-values"]
    container = _container(objects)
    args = build_parser().parse_args(["serve", *container["args"]])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert (args.tls_cert, args.tls_key, args.tls_client_ca) == tuple(
        Path(mounts["tls"]) / f for f in ("tls.crt", "tls.key", "ca.crt")
    )
    pod = objects.one("Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "mobilebert-tls"
    assert volumes["admin-key"]["secret"]["secretName"] == "mobilebert-admin"
    assert not objects.of_kind("Secret")  # the existing one is used
    init = pod["initContainers"][0]
    assert init["volumeMounts"] == [{"name": "model-repository", "mountPath": "/models"}]
    assert volumes["model-repository"] == {"name": "model-repository", "emptyDir": {}}
    ingress = objects.one("Ingress")
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"] == {"name": "grpc"}
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPCS"
    monitor = objects.one("ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"] == objects.one("Service")["spec"]["selector"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"modelRepository.source": "s3"}, "modelRepository.source must be one of"),
        ({"modelRepository.source": "pvc"}, "modelRepository.pvc.claimName is required with source pvc"),
        ({"tls.enabled": "true"}, "tls.secretName is required with tls.enabled"),
        ({"autoscaling.queueTime.enabled": "false", "autoscaling.cpu.enabled": "false"}, "needs autoscaling"),
        ({"ports.http": "70000"}, "ports.http"),
    ],
)
def test_bad_values_fail_rendering_with_a_clear_error(values, message):
    from deploy.manifests import _helm

    args = ["template", "bad", str(CHART)]
    for key, value in values.items():  # --set, not --set-string: the schema sees booleans and numbers
        args += ["--set", f"{key}={value}"]
    with pytest.raises(ManifestError, match=re.escape(message)):
        _helm(*args)


def test_kserve_runtime_serves_the_v2_protocol_with_deploy_serve_and_the_service_uses_it():
    objects = {o["kind"]: o for o in kserve_objects()}
    runtime, service = objects["ServingRuntime"], objects["InferenceService"]
    for obj in objects.values():
        validate(obj)  # the runtime's containers and volumes as a core Pod
    container = runtime["spec"]["containers"][0]
    args = build_parser().parse_args(["serve", *container["args"]])
    assert (args.address, args.http_port, args.grpc_port) == ("0.0.0.0", 8080, 9000)  # KServe's ports
    assert container["ports"] == [{"name": "h2c", "containerPort": args.grpc_port, "protocol": "TCP"}]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert args.admin_key_file.parent == Path(mounts["admin-key"])
    assert {"v2", "grpc-v2"} <= set(runtime["spec"]["protocolVersions"])
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert {"name": model["modelFormat"]["name"], "version": "1", "autoSelect": True} in runtime["spec"][
        "supportedModelFormats"
    ]
