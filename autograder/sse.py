"""Reading a Server-Sent Events body in a graded test, as a browser's EventSource does."""

from __future__ import annotations


def parse_sse(text: str) -> list[dict[str, str]]:
    """The events of an SSE body, each a dict of its fields (comments skipped).

    Lines end in LF, CRLF or CR; a blank line ends an event; a value loses one leading
    space; several `data` lines of one event are joined with newlines.
    """
    events: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if line == "":
            if fields:
                events.append(fields)
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data" and "data" in fields:
            fields["data"] += "\n" + value
        else:
            fields[name] = value
    if fields:
        events.append(fields)
    return events
