"""A test suite for step 12's service: what each route promises, one test per promise.

Run it on its own from this folder: `python -m pytest test_service.py --noconftest`.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from service import MAX_NOTE, MAX_NOTES_PER_USER, NOTE_TTL, app, get_clock, get_model

from autograder.sse import parse_sse

ALICE = {"Authorization": "Bearer alice-key"}
BOB = {"Authorization": "Bearer bob-key"}


class FakeClock:
    """A clock the test moves by hand: time passes only when the test says so."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeModel:
    """A model whose answer the test knows in advance."""

    name = "fake"

    def predict(self, text: str) -> tuple[str, float]:
        return "negative", 0.25

    def tokens(self, prompt: str, max_tokens: int) -> Iterator[str]:
        yield from ["t"] * max_tokens


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    fake = FakeClock()
    app.dependency_overrides[get_clock] = lambda: fake
    yield fake
    app.dependency_overrides.clear()


@pytest.fixture
def client(clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(app) as test_client:  # `with` runs the lifespan: the model is loaded
        yield test_client


def test_health_names_the_loaded_model(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "model": "word-sentiment"}


def test_predict_answers_label_and_confidence(client: TestClient) -> None:
    response = client.post("/predict", json={"text": "I love it, great and fast"}, headers=ALICE)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"label", "confidence"}
    assert body["label"] == "positive"
    assert 0 < body["confidence"] < 1


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
def test_predict_needs_a_valid_key(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post("/predict", json={"text": "fine"}, headers=headers)
    assert response.status_code == 401


@pytest.mark.parametrize("text", ["", "x" * 501])
def test_predict_refuses_a_text_out_of_bounds(client: TestClient, text: str) -> None:
    response = client.post("/predict", json={"text": text}, headers=ALICE)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "text"]


def test_predict_uses_the_model_of_the_dependency(client: TestClient) -> None:
    app.dependency_overrides[get_model] = FakeModel
    response = client.post("/predict", json={"text": "great"}, headers=ALICE)
    assert response.json() == {"label": "negative", "confidence": 0.25}


@settings(max_examples=10, deadline=None)
@given(text=st.text(min_size=1, max_size=500))
def test_any_valid_text_gets_a_prediction(text: str) -> None:
    with TestClient(app) as client:  # hypothesis calls the test many times: no fixture
        response = client.post("/predict", json={"text": text}, headers=ALICE)
    assert response.status_code == 200
    assert response.json()["label"] in {"positive", "negative"}


def create_note(client: TestClient, text: str = "buy milk", headers=ALICE) -> httpx2.Response:  # type: ignore[no-untyped-def]
    return client.post("/notes", json={"text": text}, headers=headers)


def test_a_new_note_is_201_and_readable_by_its_owner(client: TestClient) -> None:
    created = create_note(client)
    assert created.status_code == 201
    note = created.json()
    assert note["owner"] == "alice" and note["text"] == "buy milk"
    assert note["expires_at"] == note["created_at"] + NOTE_TTL
    read = client.get(f"/notes/{note['id']}", headers=ALICE)
    assert read.status_code == 200
    assert read.json() == note


def test_another_users_note_is_404(client: TestClient) -> None:
    note = create_note(client).json()
    assert client.get(f"/notes/{note['id']}", headers=BOB).status_code == 404
    assert client.get("/notes/no-such-id", headers=ALICE).status_code == 404


def test_a_note_of_the_longest_length_is_accepted_one_more_is_not(client: TestClient) -> None:
    assert create_note(client, "n" * MAX_NOTE).status_code == 201
    assert create_note(client, "n" * (MAX_NOTE + 1)).status_code == 422


def test_a_user_holds_at_most_three_notes(client: TestClient) -> None:
    for _ in range(MAX_NOTES_PER_USER):
        assert create_note(client).status_code == 201
    assert create_note(client).status_code == 409
    assert create_note(client, headers=BOB).status_code == 201  # each user counts their own


def test_a_note_expires_exactly_after_its_ttl(client: TestClient, clock: FakeClock) -> None:
    note = create_note(client).json()
    clock.now += NOTE_TTL - 0.001
    assert client.get(f"/notes/{note['id']}", headers=ALICE).status_code == 200
    clock.now += 0.001  # the very instant it expires
    assert client.get(f"/notes/{note['id']}", headers=ALICE).status_code == 404


def test_the_stream_sends_max_tokens_then_done(client: TestClient) -> None:
    body = {"prompt": "hello there", "max_tokens": 3}
    with client.stream("POST", "/chat/stream", json=body, headers=ALICE) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(response.read().decode())
    assert [event["event"] for event in events] == ["token", "token", "token", "done"]
    assert events[0]["data"] == '{"token":"hello"}'
    assert events[-1]["data"] == '{"tokens":3}'


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_stream_under_an_async_client(clock: FakeClock) -> None:
    # httpx2's ASGITransport does not run the lifespan: run it ourselves, around the client.
    async with app.router.lifespan_context(app):
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.post(
                "/chat/stream", json={"prompt": "a b", "max_tokens": 2}, headers=ALICE
            )
    events = parse_sse(response.text)
    assert [event.get("event") for event in events] == ["token", "token", "done"]
