"""`build.json`: which models a build produced (serve loads exactly these).

Its own module so that serving (`python -m deploy serve`, the container image) reads it without importing the
build's export stack (torch, onnx).
"""

from __future__ import annotations

import json
from pathlib import Path

BUILD_RECORD = "build.json"


def read_build_record(repository: Path) -> dict | None:
    path = Path(repository) / BUILD_RECORD
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
