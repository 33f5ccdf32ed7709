"""`autograder.sse.parse_sse` reads an event stream as a browser's EventSource does."""

from __future__ import annotations

from autograder.sse import parse_sse


def test_events_fields_comments_and_line_endings() -> None:
    body = (
        ": a comment, skipped\r\n"
        'event: token\r\nid: 0\r\ndata: {"token": " Hello"}\r\n\r\n'
        "data:no space\rdata:  two spaces keep one\r\r"
        "event: done\ndata: [DONE]"  # the last event, with no blank line after it
    )
    assert parse_sse(body) == [
        {"event": "token", "id": "0", "data": '{"token": " Hello"}'},
        {"data": "no space\n two spaces keep one"},
        {"event": "done", "data": "[DONE]"},
    ]


def test_blank_lines_alone_make_no_event() -> None:
    assert parse_sse("\n\n: keep-alive\n\n") == []
