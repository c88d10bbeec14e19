"""A local stand-in for an OpenAI-compatible endpoint, for the tests of the endpoint wrapper, the
judge and the engines that call one."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = tuple[int, str, bytes]  # status, Content-Type, body


class StubServer(ThreadingHTTPServer):
    """The stub's server: `url` (its /v1 base URL), `hits` (requests received), `lock`, `stop`
    (set when the stub closes, to end waits early), and the keyword state the test gave it."""

    daemon_threads = True
    url: str
    hits: int
    lock: threading.Lock
    stop: threading.Event

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], OSError):  # a client gone away is expected
            super().handle_error(request, client_address)


def json_reply(body: object, status: int = 200) -> Reply:
    return status, "application/json", json.dumps(body).encode()


def chat_completion(content: str, model: str = "m") -> dict:
    """A chat completion answering `content`."""
    return {
        "id": "x", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
    }  # fmt: skip


@contextmanager
def stub_server(
    respond: Callable[[BaseHTTPRequestHandler, dict], Reply], **state: Any
) -> Iterator[StubServer]:
    """A server on 127.0.0.1 answering each POST with `respond(handler, request)`, the request
    its JSON body; `handler.server` is the stub, `handler.hit` the request's number (from 1)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with server.lock:
                server.hits += 1
                self.hit = server.hits
            status, ctype, data = respond(self, request)
            try:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client has gone (a slow answer past its timeout)

        def log_message(self, *args):
            pass

    server = StubServer(("127.0.0.1", 0), Handler)
    server.hits, server.lock, server.stop = 0, threading.Lock(), threading.Event()
    vars(server).update(state)
    server.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()
