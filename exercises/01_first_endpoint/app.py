"""Step 01: a small text-analysis API with FastAPI and Pydantic.

Read README.md in this folder first: it states what each endpoint must do.
Grade your work with `pytest exercises/01_first_endpoint`.
"""

from collections import Counter

from fastapi import FastAPI
from pydantic import BaseModel

from coursekit.docs import add_offline_docs

# docs_url=None, redoc_url=None, then add_offline_docs: /docs and /redoc served from this
# machine instead of a CDN, so they work offline (see the lesson).
app = FastAPI(title="Text analysis", version="1.0.0", docs_url=None, redoc_url=None)
add_offline_docs(app)


class AnalyzeRequest(BaseModel):
    # TODO: declare one required field, `text`, a string.
    pass


class WordCount(BaseModel):
    # TODO: declare two fields: `word` (a string) and `count` (an integer).
    pass


class AnalyzeResponse(BaseModel):
    # TODO: declare four fields: `characters` and `words` and `unique_words`
    # (integers), and `top_words` (a list of WordCount).
    pass


@app.get("/health")
def health() -> dict[str, str]:
    # TODO: return {"status": "ok"}.
    raise NotImplementedError


@app.post("/analyze")
def analyze(request: AnalyzeRequest, top: int = 3) -> AnalyzeResponse:
    # TODO: split request.text on whitespace (str.split() with no argument) and count:
    # - characters: every character of the text, spaces included;
    # - words: how many pieces the split gives;
    # - unique_words: how many different words, ignoring case ("Cat" == "cat");
    # - top_words: the `top` most frequent words, lower-cased, most frequent first,
    #   ties in alphabetical order. collections.Counter counts; sorted() with a key ranks.
    # Return an AnalyzeResponse. Do not catch validation errors yourself: FastAPI answers
    # 422 for a bad body or a bad `top` before this function runs.
    raise NotImplementedError
