"""The shared endpoint wrapper and the judge client on a stub server: what is retried, what is
not, and that the final error names the endpoint but never the key."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from iro.base.endpoint import Endpoint, EndpointError
from reward.openai_client import ChatClient

KEY = "sk-test-0123456789abcdef"


@pytest.fixture
def stub():
    """A server answering every request with `stub.status`; its error body echoes the key."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            server.hits += 1
            if server.status == 200:
                body = {
                    "id": "x", "object": "chat.completion", "created": 0, "model": "m",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "7"}}],
                }  # fmt: skip
            else:
                body = {"error": {"message": f"no: {self.headers['Authorization']}"}}
            data = json.dumps(body).encode()
            self.send_response(server.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.hits, server.status = 0, 200
    server.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def chat(stub, **kwargs):
    endpoint = Endpoint(base_url=stub.url, model="m", api_key=KEY, timeout_s=5, **kwargs)
    return endpoint.chat(messages=[{"role": "user", "content": "hi"}])


def test_server_errors_are_retried_then_named_without_the_key(stub):
    stub.status = 503
    with pytest.raises(
        EndpointError, match=rf"endpoint {stub.url} failed 2 times \(model m\)"
    ) as e:
        chat(stub, max_retries=1)
    assert stub.hits == 2 and e.value.status_code == 503
    assert KEY not in str(e.value) and "***" in str(e.value)


def test_a_rejected_key_is_not_retried(stub):
    stub.status = 401
    with pytest.raises(EndpointError, match=rf"endpoint {stub.url} failed \(model m\)") as e:
        chat(stub, max_retries=3)
    assert stub.hits == 1 and e.value.status_code == 401


def test_chat_client_counts_failures_and_raises_on_a_rejected_key(stub):
    client = ChatClient(model="m", api_key=KEY, base_url=stub.url, max_retries=0)
    assert client.complete_many([[{"role": "user", "content": "hi"}]] * 2) == ["7", "7"]
    stub.status = 400
    assert client.complete([{"role": "user", "content": "hi"}]) is None
    assert (client.requests, client.failures) == (3, 1)
    stub.status = 401
    with pytest.raises(EndpointError, match="401"):
        client.complete([{"role": "user", "content": "hi"}])
    assert KEY not in repr(client)
