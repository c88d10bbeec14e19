"""`iro api`: runs' aligned policies behind an OpenAI-compatible HTTP API.

    GET  /v1/models             RUN@K for each run served, and RUN@0, its base policy
    POST /v1/completions        prompt as raw text (no template), or token ids
    POST /v1/chat/completions   messages through the policy's chat template

An optional `alignment` object in the body (`extra_body={"alignment": {...}}` with the OpenAI
clients) picks the method, the search shape and the runs' strengths (`api_schema.Alignment`).
`n` answers are n decodes, in one call, at the request seed's places 0..n-1; a seed gives the
same answers every time, equal to `decode`'s with that seed. The engine, reward and tokenizer
are loaded before the socket opens and stay loaded; one thread decodes, batching what queues
meanwhile (`api_worker`).

Token-id prompts (what the project's `openai` engine sends) are read as the text they decode to,
which the policy re-tokenises: a prefix whose tokens are not the tokenizer's own split of its
text reaches the policy split anew.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from jinja2 import TemplateError
from starlette.exceptions import HTTPException

from iro.app.api_schema import APIError, ChatRequest, CompletionRequest, SamplingRequest
from iro.app.api_served import Planned, ServedModel, load_models, plan
from iro.app.api_worker import Answer, DecodeWorker
from iro.app.api_worker import Response as Decoded
from iro.core.config import ConfigError
from iro.core.data import render_chat
from iro.core.store.protocol import Store

log = logging.getLogger(__name__)


def cost(answer: Answer, method: str) -> dict[str, Any]:
    """What answering took beyond tokens (usage.iro): add a counter here."""
    return {"seconds": round(answer.seconds, 4), "candidates": answer.candidates, "method": method}


def usage(planned: Planned, answer: Answer) -> dict[str, Any]:
    completion = sum(r.tokens for r in answer.responses)
    return {
        "prompt_tokens": planned.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": planned.prompt_tokens + completion,
        "iro": cost(answer, planned.method),
    }


def _finish(response: Decoded) -> str:
    return "stop" if response.ended else "length"


def _body(kind: str, model: str, choices: list[dict[str, Any]], used: dict[str, Any]) -> dict:
    prefix = "chatcmpl" if kind == "chat.completion" else "cmpl"
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": used,
    }


def _prompt_texts(prompt: str | list, tokenizer: Any) -> list[str]:
    """Completions' prompt forms: a text, texts, token ids or lists of token ids."""
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise APIError(400, "prompt is empty", param="prompt")
    if isinstance(prompt[0], str):
        return list(prompt)
    if isinstance(prompt[0], int):
        return [tokenizer.decode(prompt)]
    return [tokenizer.decode(ids) for ids in prompt]


def _refusal(err: APIError) -> JSONResponse:
    return JSONResponse(err.body, status_code=err.status)


def create_app(
    models: Mapping[str, ServedModel], worker: DecodeWorker, api_key: str | None = None
) -> FastAPI:
    """The HTTP layer over loaded `models` and the `worker` that decodes for them; with
    `api_key`, every request must carry `Authorization: Bearer <api_key>`."""
    app = FastAPI(title="iro api", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(APIError)
    async def refused(_: Request, err: APIError) -> JSONResponse:
        return _refusal(err)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        param = ".".join(str(part) for part in first["loc"][1:]) or None
        return _refusal(APIError(400, f"{param}: {first['msg']}" if param else first["msg"], param))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, err: HTTPException) -> JSONResponse:
        return _refusal(APIError(err.status_code, str(err.detail)))

    if api_key is not None:
        expected = f"Bearer {api_key}".encode()

        @app.middleware("http")
        async def require_key(request: Request, call_next) -> Response:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                message = "missing or wrong API key: send the header Authorization: Bearer <key>"
                return _refusal(APIError(401, message, code="invalid_api_key"))
            return await call_next(request)

    def served(request: SamplingRequest) -> ServedModel:
        if request.stream:
            raise APIError(400, "stream: streaming is not supported; ask without it", "stream")
        if request.model not in models:
            raise APIError(
                404,
                f"model {request.model!r} is not served here; served: {', '.join(models)}",
                param="model",
                code="model_not_found",
            )
        return models[request.model]

    async def decoded(planned: Planned) -> Answer:
        try:
            return await asyncio.wrap_future(worker.submit(planned.job))
        except Exception as err:
            first_line = (str(err).strip().splitlines() or [""])[0][:300]
            message = f"decoding failed ({type(err).__name__}: {first_line})"
            raise APIError(500, message, kind="server_error") from None

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model.card() for model in models.values()]}

    @app.post("/v1/completions")
    async def completions(request: CompletionRequest) -> dict[str, Any]:
        model = served(request)
        planned = plan(model, _prompt_texts(request.prompt, model.tokenizer), request, "prompt")
        answer = await decoded(planned)
        choices = [
            {"index": i, "text": r.text, "logprobs": None, "finish_reason": _finish(r)}
            for i, r in enumerate(answer.responses)
        ]
        return _body("text_completion", model.id, choices, usage(planned, answer))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatRequest) -> dict[str, Any]:
        model = served(request)
        if not model.tokenizer.chat_template:
            message = f"model {model.id}'s policy has no chat template: use /v1/completions"
            raise APIError(400, message, param="messages")
        try:
            prompt = render_chat(model.tokenizer, request.as_dicts())
        except TemplateError as err:
            message = f"the chat template refused the messages: {err}"
            raise APIError(400, message, param="messages") from None
        planned = plan(model, [prompt], request, "messages")
        answer = await decoded(planned)
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": r.text},
                "finish_reason": _finish(r),
            }
            for i, r in enumerate(answer.responses)
        ]
        return _body("chat.completion", model.id, choices, usage(planned, answer))

    return app


def read_api_key(variable: str) -> str:
    key = os.environ.get(variable, "")
    if not key:
        raise ConfigError(f"--api-key-env names {variable}, which is not set")
    return key


def listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound now, so that a port in use fails in one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as err:
        message = f"cannot listen on {host}:{port} ({err.strerror}); pick another --port"
        raise ConfigError(message) from None


def serve(
    store: Store,
    runs: Sequence[str],
    with_runs: Sequence[str],
    overrides: Mapping[str, Any],
    host: str,
    port: int,
    api_key_env: str | None,
) -> None:
    """Load the runs' models, then answer on host:port until interrupted."""
    api_key = read_api_key(api_key_env) if api_key_env else None
    models = load_models(store, runs, with_runs, overrides)
    worker = DecodeWorker()
    try:
        sock = listen(host, port)
        url = f"http://{host}:{sock.getsockname()[1]}/v1"
        log.info("iro api serving %s at %s", ", ".join(models), url)
        server = uvicorn.Server(
            uvicorn.Config(create_app(models, worker, api_key), log_level="warning")
        )
        server.run(sockets=[sock])
    finally:
        worker.close()
