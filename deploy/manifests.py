"""Render the Helm chart and validate Kubernetes objects offline, against the bundled Kubernetes JSON schemas.

No cluster can run here, so this is what proves the chart and the KServe manifests: `helm lint --strict`,
`helm template` for a values set, and every object strictly validated (unknown fields are errors) against the
Kubernetes versions the chart supports. Custom resources have no schema in kubernetes-validate; the containers a
KServe ServingRuntime declares are core Container objects, so they are validated as the containers of a Pod.

python -m deploy.manifests                    # lint + every values set in ci/ + the KServe manifests
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from .helm_tool import ensure_helm

DEPLOY_DIR = Path(__file__).resolve().parent
CHART = DEPLOY_DIR / "helm" / "mobilebert-triton"
KSERVE_DIR = DEPLOY_DIR / "kserve"
KUBERNETES_VERSIONS = ("1.29", "1.30", "1.31", "1.32", "1.33")
# Custom resources the chart or the KServe manifests may produce (no bundled schema).
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("serving.kserve.io/v1alpha1", "ServingRuntime"),
    ("serving.kserve.io/v1beta1", "InferenceService"),
}


class ManifestError(RuntimeError):
    """The chart did not lint or render, or an object failed schema validation."""


@dataclass(frozen=True)
class Rendered:
    values_files: tuple[Path, ...]
    objects: list[dict]

    def of_kind(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str) -> dict:
        found = self.of_kind(kind)
        if len(found) != 1:
            raise ManifestError(f"expected one {kind}, rendered {len(found)}")
        return found[0]


def _helm(*args: str) -> str:
    result = subprocess.run([str(ensure_helm()), *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ManifestError(f"helm {' '.join(args)} failed:\n{result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def lint(chart: Path = CHART, values_files: tuple[Path, ...] = ()) -> str:
    return _helm("lint", "--strict", str(chart), *(a for f in values_files for a in ("-f", str(f))))


def render(
    chart: Path = CHART,
    values_files: tuple[Path, ...] = (),
    set_values: dict[str, str] | None = None,
    release: str = "mobilebert",
) -> Rendered:
    args = ["template", release, str(chart)]
    for f in values_files:
        args += ["-f", str(f)]
    for key, value in (set_values or {}).items():
        args += ["--set-string", f"{key}={value}"]
    return Rendered(tuple(values_files), load_objects(_helm(*args)))


def load_objects(text: str) -> list[dict]:
    objects = [doc for doc in yaml.safe_load_all(text) if doc]
    for obj in objects:
        if not isinstance(obj, dict) or "kind" not in obj or "apiVersion" not in obj:
            raise ManifestError(f"not a Kubernetes object: {str(obj)[:200]}")
    return objects


def value_sets(chart: Path = CHART) -> list[Path]:
    """The chart's own alternative values files (ci/*.yaml, helm's convention for what CI renders)."""
    return sorted((chart / "ci").glob("*.yaml"))


def validate(obj: dict, versions: tuple[str, ...] = KUBERNETES_VERSIONS) -> None:
    """Strict schema validation of one object for every version; custom resources: their core containers."""
    import kubernetes_validate

    for target in _schema_targets(obj):
        for version in versions:
            try:
                kubernetes_validate.validate(target, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = "/".join(str(p) for p in exc.path)
                raise ManifestError(
                    f"{obj['kind']} {obj.get('metadata', {}).get('name')} is invalid for Kubernetes {version} "
                    f"at {path or '(root)'}: {exc.message}"
                ) from None
            except kubernetes_validate.SchemaNotFoundError:
                raise ManifestError(
                    f"Kubernetes {version} has no {target['apiVersion']} {target['kind']} (removed or misspelt)"
                ) from None


def _schema_targets(obj: dict) -> list[dict]:
    if (obj["apiVersion"], obj["kind"]) not in CUSTOM_KINDS:
        return [obj]
    if obj["kind"] == "ServingRuntime":
        spec = obj["spec"]
        pod_spec = {"containers": spec["containers"], **({"volumes": spec["volumes"]} if "volumes" in spec else {})}
        return [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": obj["metadata"]["name"]}, "spec": pod_spec}]
    return []  # ServiceMonitor, InferenceService: checked structurally by the tests


def kserve_objects(directory: Path = KSERVE_DIR) -> list[dict]:
    return [o for f in sorted(directory.glob("*.yaml")) for o in load_objects(f.read_text(encoding="utf-8"))]


def check_all() -> list[str]:
    """Lint, render every values set, validate every object; returns one line per values set."""
    lines = []
    for values in [None, *value_sets()]:
        files = () if values is None else (values,)
        lint(CHART, files)
        rendered = render(CHART, files)
        for obj in rendered.objects:
            validate(obj)
        kinds = ", ".join(sorted({o["kind"] for o in rendered.objects}))
        lines.append(f"{values.name if values else 'default values'}: {len(rendered.objects)} objects valid ({kinds})")
    for obj in kserve_objects():
        validate(obj)
    lines.append(f"kserve: {len(kserve_objects())} objects valid")
    return lines


def main() -> int:
    try:
        for line in check_all():
            print(line)
    except ManifestError as exc:
        print(f"manifest check failed: {exc}", file=sys.stderr)
        return 1
    print(f"Kubernetes {', '.join(KUBERNETES_VERSIONS)}: strict schema validation passed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
