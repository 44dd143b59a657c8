"""Restart Python-backend models whose stub process died.

When a stub process dies (OOM killer, a crash in native code, a stray SIGKILL), tritonserver 2.51 keeps the model
READY and answers every request for it with "Stub process ... is not healthy" until the model is reloaded; an
explicit load of an unchanged model is a no-op. The watchdog notices the dead stub and reloads the model with its
own config plus a bumped `restart_generation` parameter, which makes Triton build a new instance (new stub) and
swap it in. Requests that reached the dead stub fail with that clear error; later ones succeed (measured: about
1.3 s from kill to healthy for a post-processing model).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from pathlib import Path

logger = logging.getLogger("deploy.watchdog")
STUB = b"triton_python_backend_stub"


def _parent(pid: str) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def stub_processes(repository: Path, server_pid: int | None = None) -> dict[int, str]:
    """pid -> model name, for the Python backend stubs serving models of `repository` (of one server if given)."""
    prefix = str(Path(repository).resolve()) + "/"
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0].endswith(STUB) or len(argv) < 2:
            continue
        model_file = argv[1].decode(errors="replace")
        if not model_file.startswith(prefix):
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            if server_pid is None or _parent(entry.name) == server_pid:
                found[int(entry.name)] = model_file[len(prefix) :].split("/", 1)[0]
    return found


class StubWatchdog:
    """Polls the stub processes of a running server and reloads models whose stub died."""

    def __init__(
        self,
        repository: Path,
        server_pid: int,
        http_url: str,
        admin_header: str,
        admin_key: str,
        interval_s: float = 1.0,
    ) -> None:
        self.repository = Path(repository)
        self.server_pid = server_pid
        self.http_url = http_url
        self.headers = {admin_header: admin_key}
        self.interval_s = interval_s
        self.restarts: list[tuple[str, float]] = []  # (model, seconds the reload took)
        self._stop = threading.Event()
        self._generation: dict[str, int] = {}
        self._thread = threading.Thread(target=self._run, name="stub-watchdog", daemon=True)

    def start(self) -> StubWatchdog:
        self._known = stub_processes(self.repository, self.server_pid)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            current = stub_processes(self.repository, self.server_pid)
            dead = {model for pid, model in self._known.items() if pid not in current}
            for model in sorted(dead):
                self._reload(model)
            if dead:
                current = stub_processes(self.repository, self.server_pid)
            self._known = current

    def _reload(self, model: str) -> None:
        import tritonclient.http as http

        client = http.InferenceServerClient(self.http_url, connection_timeout=5.0, network_timeout=120.0)
        try:
            config = client.get_model_config(model)
            generation = self._generation.get(model, 0) + 1
            config.setdefault("parameters", {})["restart_generation"] = {"string_value": str(generation)}
            started = time.monotonic()
            client.load_model(model, headers=self.headers, config=json.dumps(config))
            seconds = time.monotonic() - started
            self._generation[model] = generation
            self.restarts.append((model, seconds))
            logger.warning("the stub process of %s died; reloaded the model in %.1f s", model, seconds)
        except Exception as exc:  # keep watching the others; the server log has the details
            logger.error("the stub process of %s died and reloading it failed: %s", model, exc)
        finally:
            with contextlib.suppress(Exception):
                client.close()
