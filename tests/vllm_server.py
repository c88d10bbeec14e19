"""A real OpenAI-compatible server on loopback: vLLM serving the embedded model, one per session.

Generic on purpose: it yields the base URL, the served model name and the API key the server
demands, so judge tests and an OpenAI-compatible generation engine can share it. The server is
stopped in teardown even when a test fails.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SERVED_NAME = "smollm2-135m-instruct"
START_TIMEOUT_S = 240


@dataclass(frozen=True)
class OpenAIServer:
    base_url: str  # ends in /v1, as the openai client expects
    model: str
    api_key: str = field(repr=False)
    start_seconds: float


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ready(base_url: str, api_key: str) -> bool:
    request = urllib.request.Request(
        f"{base_url}/models", headers={"Authorization": f"Bearer {api_key}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status == 200 and bool(json.load(response)["data"])
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)  # the server's own process group (vLLM spawns workers)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def openai_server(tmp_path_factory) -> Iterator[OpenAIServer]:
    """Start `vllm.entrypoints.openai.api_server` on the embedded model; yield how to reach it."""
    from iro.core.models import resolve_model

    model_dir = resolve_model("embedded:smollm2-135m-instruct")
    port = _free_port()
    api_key = "sk-test-" + secrets.token_hex(12)
    base_url = f"http://127.0.0.1:{port}/v1"
    log_path = Path(tmp_path_factory.mktemp("vllm-server")) / "server.log"
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model_dir, "--served-model-name", SERVED_NAME,
        "--host", "127.0.0.1", "--port", str(port), "--api-key", api_key,
        "--dtype", "float32", "--max-model-len", "1024", "--enforce-eager",
        "--gpu-memory-utilization", "0.3",
        # per-request seeds (the generation engine sends them) break under chunked prefill on CPU
        "--no-enable-chunked-prefill", "--max-num-batched-tokens", "8192",
    ]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
    started = time.monotonic()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        while not _ready(base_url, api_key):
            if process.poll() is not None:
                pytest.fail(
                    f"vLLM server exited ({process.returncode}):\n{log_path.read_text()[-3000:]}"
                )
            if time.monotonic() - started > START_TIMEOUT_S:
                pytest.fail(f"vLLM server not ready after {START_TIMEOUT_S}s; log: {log_path}")
            time.sleep(1)
        yield OpenAIServer(base_url, SERVED_NAME, api_key, round(time.monotonic() - started, 1))
    finally:
        _stop(process)
