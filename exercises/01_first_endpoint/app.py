"""Step 01: a small text-analysis API with FastAPI and Pydantic.

Read README.md in this folder first: it states what each endpoint must do.
Grade your work with `pytest exercises/01_first_endpoint`.
"""

from collections import Counter
from typing import Annotated

from fastapi import FastAPI, Query
from pydantic import BaseModel

from coursekit.docs import UNREADABLE_BODY, add_offline_docs

# docs_url=None, redoc_url=None, then add_offline_docs: /docs and /redoc served from this
# machine instead of a CDN, so they work offline (see the lesson).
app = FastAPI(title="Text analysis", version="1.0.0", docs_url=None, redoc_url=None)
add_offline_docs(app)


class AnalyzeRequest(BaseModel):
    # TODO: the body README.md describes: one required field, `text`, a string, which
    # may be empty but never missing or null ("A request body" in the lesson).
    pass


class WordCount(BaseModel):
    # TODO: one item of `top_words`: a word (a string) and how often it occurs (an
    # integer), named as in README.md ("Response models" in the lesson).
    pass


class AnalyzeResponse(BaseModel):
    # TODO: the four fields of README.md's table, each with its type, and no other
    # ("Response models" in the lesson).
    pass


@app.get("/health")
def health() -> dict[str, str]:
    # TODO: answer the body README.md gives for GET /health ("Path operations").
    raise NotImplementedError


@app.post("/analyze", responses=UNREADABLE_BODY)
def analyze(document: AnalyzeRequest, top: Annotated[int, Query()] = 3) -> AnalyzeResponse:
    # TODO: refuse a `top` below 1 with FastAPI's 422, declared on the parameter, not
    # checked in the body ("Path and query parameters" in the lesson).
    # TODO: count the words of document.text, as README.md's table says: the characters,
    # the words (the pieces of str.split() with no argument), the different words
    # ignoring case, and the `top` most frequent ones, lower-cased, most frequent first,
    # ties in alphabetical order ("A request body" and "Response models" in the lesson).
    # Return an AnalyzeResponse. Catch no validation errors: FastAPI answers 422 for a
    # bad body or a bad `top` before this function runs.
    raise NotImplementedError
