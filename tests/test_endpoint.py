"""The shared endpoint wrapper and the judge client on a stub server: what is retried, what is
not, and that the final error names the endpoint but never the key."""

import pytest

from iro.core.endpoint import Endpoint, EndpointError
from iro.reward.openai_client import ChatClient
from tests.http_stub import chat_completion, json_reply, stub_server

KEY = "sk-test-0123456789abcdef"


@pytest.fixture
def stub():
    """A server answering every request with `stub.status`; its error body echoes the key."""

    def respond(handler, request):
        if handler.server.status == 200:
            return json_reply(chat_completion("7"))
        error = {"error": {"message": f"no: {handler.headers['Authorization']}"}}
        return json_reply(error, handler.server.status)

    with stub_server(respond, status=200) as server:
        yield server


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
