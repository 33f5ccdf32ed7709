"""Step 15, solved: a suite for the service of the brief, through HTTP only.

Each test checks one promise of the contract, so a service that breaks it fails here.
"""

from typing import Any

from fastapi.testclient import TestClient

pytest_plugins = ["suite_kit"]  # the fixtures: client (the service under test), redis_url

# The keys suite_kit's service knows: carol's allows 3 requests an hour.
ALICE = {"Authorization": "Bearer key-alice"}
BOB = {"Authorization": "Bearer key-bob"}
CAROL = {"Authorization": "Bearer key-carol"}

MODEL = "coursekit-tinylm"


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}


def test_models_need_a_key(client: TestClient) -> None:
    assert client.get("/v1/models", headers=ALICE).status_code == 200
    response = client.get("/v1/models")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_models_list_the_chat_model(client: TestClient) -> None:
    body = client.get("/v1/models", headers=ALICE).json()
    assert [card["id"] for card in body["data"]] == [MODEL]


def test_a_session_keeps_both_sides_of_each_turn(client: TestClient) -> None:
    session_id = client.post("/v1/sessions", headers=ALICE).json()["id"]
    headers = {**ALICE, "X-Session-ID": session_id}
    reply = client.post("/v1/chat/completions", headers=headers, json=chat("hello"))
    assert reply.status_code == 200
    content = reply.json()["choices"][0]["message"]["content"]
    stored = client.get(f"/v1/sessions/{session_id}", headers=ALICE).json()["messages"]
    assert stored == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": content},
    ]


def test_a_second_turn_sends_the_history_to_the_model(client: TestClient) -> None:
    session_id = client.post("/v1/sessions", headers=ALICE).json()["id"]
    headers = {**ALICE, "X-Session-ID": session_id}
    first = client.post("/v1/chat/completions", headers=headers, json=chat("hello"))
    second = client.post("/v1/chat/completions", headers=headers, json=chat("hello"))
    alone = client.post("/v1/chat/completions", headers=ALICE, json=chat("hello"))
    assert first.json()["usage"]["prompt_tokens"] == alone.json()["usage"]["prompt_tokens"]
    assert second.json()["usage"]["prompt_tokens"] > first.json()["usage"]["prompt_tokens"]


def test_another_users_session_is_a_404(client: TestClient) -> None:
    session_id = client.post("/v1/sessions", headers=ALICE).json()["id"]
    assert client.get(f"/v1/sessions/{session_id}", headers=ALICE).status_code == 200
    response = client.get(f"/v1/sessions/{session_id}", headers=BOB)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "session_not_found"


def test_a_stream_ends_with_done(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", headers=ALICE, json=chat("hi", stream=True))
    assert response.status_code == 200
    events = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert '"finish_reason":"length"' in events[-2]


def test_the_rate_limit_refuses_with_retry_after(client: TestClient) -> None:
    for _ in range(3):  # carol may make 3 requests an hour
        assert client.get("/v1/models", headers=CAROL).status_code == 200
    refused = client.get("/v1/models", headers=CAROL)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600
    assert client.get("/v1/models", headers=ALICE).status_code == 200


def test_a_valid_request_id_is_echoed_and_a_bad_one_replaced(client: TestClient) -> None:
    echoed = client.get("/v1/models", headers={**ALICE, "X-Request-ID": "trace-1"})
    assert echoed.headers["X-Request-ID"] == "trace-1"
    replaced = client.get("/v1/models", headers={**ALICE, "X-Request-ID": "has space"})
    assert replaced.headers["X-Request-ID"] not in {"", "has space"}


def test_another_users_job_is_a_404(client: TestClient) -> None:
    submitted = client.post("/v1/jobs", headers=ALICE, json={"texts": ["refund me"]})
    assert submitted.status_code == 202
    job_id = submitted.json()["id"]
    assert client.get(f"/v1/jobs/{job_id}", headers=ALICE).status_code == 200
    assert client.get(f"/v1/jobs/{job_id}", headers=BOB).status_code == 404
