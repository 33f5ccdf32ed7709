"""The simulated upstream services, under real uvicorn servers on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest

from coursekit.upstream import LABELS, Upstream, make_upstream, running_upstreams

FAST = make_upstream("fast", delay=0.2)
GATED = make_upstream("gated", delay=0.0, gated=True, gate_timeout=5)
BROKEN = make_upstream("broken", delay=0.0, fail=True)
CRASHING = make_upstream("crashing", delay=0.0, fail=True, status_code=500)
STUCK = make_upstream("stuck", delay=60)
ALL = (FAST, GATED, BROKEN, CRASHING, STUCK)


@pytest.fixture(scope="module")
def urls() -> Iterator[dict[str, str]]:
    with running_upstreams(*ALL) as base_urls:
        yield base_urls


@pytest.fixture(autouse=True)
def fresh_counters() -> None:
    for upstream in ALL:
        upstream.reset()


async def predict(client: httpx.AsyncClient, url: str, text: str) -> httpx.Response:
    return await client.post(f"{url}/predict", json={"text": text})


def test_concurrent_calls_are_all_in_flight_at_once(urls: dict[str, str]) -> None:
    texts = [f"request number {i}" for i in range(5)]

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=5) as client:
            return await asyncio.gather(*(predict(client, urls["fast"], t) for t in texts))

    responses = asyncio.run(main())
    assert [response.json() for response in responses] == [FAST.prediction(t) for t in texts]
    assert FAST.calls == 5
    assert FAST.peak_in_flight == 5
    assert FAST.in_flight == 0


def test_sequential_calls_never_overlap(urls: dict[str, str]) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            for i in range(3):
                response = await predict(client, urls["fast"], f"text {i}")
                assert response.status_code == 200

    asyncio.run(main())
    assert FAST.calls == 3
    assert FAST.peak_in_flight == 1


def test_a_gated_upstream_holds_requests_until_the_test_opens_it(urls: dict[str, str]) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            tasks = [asyncio.create_task(predict(client, urls["gated"], "hi")) for _ in range(5)]
            # Waiting blocks, so it runs in a thread while this loop sends the requests.
            assert await asyncio.to_thread(GATED.wait_for_in_flight, 5, 5.0)
            assert not any(task.done() for task in tasks)
            GATED.open_gate()
            responses = await asyncio.gather(*tasks)
        assert all(response.status_code == 200 for response in responses)

    asyncio.run(main())
    assert GATED.peak_in_flight == 5
    assert not GATED.wait_for_in_flight(6, timeout=0.05)


def test_reset_closes_the_gate_again() -> None:
    GATED.open_gate()
    GATED.reset()
    assert GATED.gate is not None and not GATED.gate.is_set()
    with pytest.raises(RuntimeError):
        FAST.open_gate()


@pytest.mark.parametrize(("upstream", "status"), [(BROKEN, 503), (CRASHING, 500)])
def test_a_failing_upstream_answers_an_error_with_a_json_body(
    urls: dict[str, str], upstream: Upstream, status: int
) -> None:
    response = httpx.post(f"{urls[upstream.name]}/predict", json={"text": "hi"}, timeout=5)
    assert response.status_code == status
    assert response.json() == {"detail": f"{upstream.name} is unavailable"}
    assert upstream.calls == 1


def test_a_stuck_upstream_outlasts_a_client_timeout_then_lets_go(urls: dict[str, str]) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{urls['stuck']}/predict", json={"text": "hi"}, timeout=0.2)
    assert STUCK.calls == 1
    # The client closed the connection when it timed out; the upstream notices.
    assert STUCK.wait_for_idle(timeout=2)


def test_stats_endpoint_reports_the_counters(urls: dict[str, str]) -> None:
    httpx.post(f"{urls['fast']}/predict", json={"text": "hi"}, timeout=5)
    stats = httpx.get(f"{urls['fast']}/stats", timeout=5).json()
    assert stats == {"model": "fast", "calls": 1, "in_flight": 0, "peak_in_flight": 1}
    assert stats == FAST.stats()


def test_a_bad_body_is_rejected_and_not_counted(urls: dict[str, str]) -> None:
    response = httpx.post(f"{urls['fast']}/predict", json={"txt": "hi"}, timeout=5)
    assert response.status_code == 422
    assert FAST.calls == 0


def test_predictions_are_deterministic_and_differ_between_models() -> None:
    texts = [f"sample {i}" for i in range(20)]
    other = make_upstream("other")
    for text in texts:
        answer = FAST.prediction(text)
        assert answer == make_upstream("fast").prediction(text)
        assert answer["label"] in LABELS
        assert 0.5 <= answer["score"] < 1
    assert [FAST.prediction(t) for t in texts] != [
        {**other.prediction(t), "model": "fast"} for t in texts
    ]


def test_running_upstreams_needs_unique_names() -> None:
    with pytest.raises(ValueError), running_upstreams(FAST, make_upstream("fast")):
        pass


def test_servers_stop_when_the_block_ends() -> None:
    upstream = make_upstream("short-lived", delay=0)
    with running_upstreams(upstream) as base_urls:
        url = base_urls["short-lived"]
        assert httpx.post(f"{url}/predict", json={"text": "a"}, timeout=5).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{url}/predict", json={"text": "a"}, timeout=5)


def test_an_upstream_with_a_body_answers_200_with_those_bytes() -> None:
    html = make_upstream("html", delay=0, body=b"<html>busy</html>", media_type="text/html")
    with running_upstreams(html) as base_urls:
        response = httpx.post(f"{base_urls['html']}/predict", json={"text": "a"}, timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.content == b"<html>busy</html>"
    assert html.calls == 1


def test_a_trickling_upstream_sends_spaces_until_its_gate_opens() -> None:
    trickler = make_upstream("trickler", delay=0, gated=True, gate_timeout=5, trickle=True)
    with running_upstreams(trickler) as base_urls, httpx.Client(timeout=5) as client:
        url = f"{base_urls['trickler']}/predict"
        with client.stream("POST", url, json={"text": "a"}) as response:
            assert response.status_code == 200
            chunks = response.iter_bytes()
            received = b""
            while received.count(b" ") < 3:  # several reads, each well under 5 s
                received += next(chunks)
            assert trickler.in_flight == 1
            trickler.open_gate()
            received += b"".join(chunks)
    assert received.strip() == trickler.answer_body("a")
    assert json.loads(received) == trickler.prediction("a")
    assert trickler.wait_for_idle(timeout=2)
