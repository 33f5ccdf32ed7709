"""coursekit.redis_server: a real server where one ships, a plain sentence where none does."""

from __future__ import annotations

import socket
import threading

import pytest

from coursekit import redis_server


def _roundtrip(url: str) -> bytes:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.set("course-check", "alive")
        return client.get("course-check")
    finally:
        client.close()


@pytest.mark.skipif(not redis_server.available(), reason="no Valkey binary for this system")
def test_a_started_server_answers_and_stops(monkeypatch):
    monkeypatch.delenv(redis_server.ENV, raising=False)
    with redis_server.running_server() as url:
        assert _roundtrip(url) == b"alive"
        port = int(url.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


@pytest.mark.skipif(not redis_server.available(), reason="no Valkey binary for this system")
def test_a_server_named_in_the_environment_is_used_as_it_is(monkeypatch):
    monkeypatch.delenv(redis_server.ENV, raising=False)
    with redis_server.running_server() as url:
        monkeypatch.setenv(redis_server.ENV, url)
        with redis_server.running_server() as named:
            assert named == url
        # Using a named server leaves it running and its keys in place.
        assert _roundtrip(url) == b"alive"


@pytest.mark.skipif(not redis_server.available(), reason="no Valkey binary for this system")
def test_servers_started_at_the_same_moment_all_start(monkeypatch):
    # As when steps 14 and 15, and the course's checks, grade in parallel.
    monkeypatch.delenv(redis_server.ENV, raising=False)
    count = 6
    start = threading.Barrier(count)
    start_all_before_any_stops = threading.Barrier(count)
    answers: list[bytes] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            start.wait(timeout=30)
            with redis_server.running_server() as url:
                answers.append(_roundtrip(url))
                start_all_before_any_stops.wait(timeout=60)
        except BaseException as error:
            errors.append(error)
            start_all_before_any_stops.abort()

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert answers == [b"alive"] * count


def test_a_named_server_that_does_not_answer_is_one_plain_sentence(monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv(redis_server.ENV, f"redis://127.0.0.1:{port}/0")
    with pytest.raises(redis_server.NoServerError) as raised, redis_server.running_server():
        pass
    message = str(raised.value)
    assert "COURSE_REDIS_URL" in message and "valkey/valkey" in message
