"""Note each exception an app raises while it serves, though its client sees a 500.

Every Starlette app's outermost layer is ServerErrorMiddleware, which answers 500 and
re-raises. A note of the exception lets a failure name the learner's line that raised,
not only the 500 that a test (or a real server) saw. Used where the learner's app runs:
the grading child (`autograder.child`) and the app server of an instructor's run
(`autograder.appserver`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def note_server_errors(note: Callable[[BaseException], None]) -> None:
    """From now on, call `note(exc)` for each exception an app's request raises."""
    from starlette.middleware.errors import ServerErrorMiddleware

    original = ServerErrorMiddleware.__init__

    # The note is taken inside the middleware, around the app it wraps: the middleware
    # sends its 500 before it re-raises, so a client under a real server could read the
    # 500 (and the test fail) before a note taken outside it was written.
    def wrapping(self: ServerErrorMiddleware, app: Any, *args: Any, **kwargs: Any) -> None:
        async def noted(scope: Any, receive: Any, send: Any) -> None:
            try:
                await app(scope, receive, send)
            except Exception as exc:
                note(exc)
                raise

        original(self, noted, *args, **kwargs)

    ServerErrorMiddleware.__init__ = wrapping  # type: ignore[method-assign]
