"""Step 01, solved: a small text-analysis API with FastAPI and Pydantic."""

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
    text: str


class WordCount(BaseModel):
    word: str
    count: int


class AnalyzeResponse(BaseModel):
    characters: int
    words: int
    unique_words: int
    top_words: list[WordCount]


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


# At least 1: a negative `top` would slice words off the end of the ranking ([:-1]) and
# answer a plausible, wrong list instead of a 422.
@app.post("/analyze", responses=UNREADABLE_BODY)
def analyze(document: AnalyzeRequest, top: Annotated[int, Query(ge=1)] = 3) -> AnalyzeResponse:
    words = [word.lower() for word in document.text.split()]
    counts = Counter(words)
    # Most frequent first; ties in alphabetical order, so the answer is deterministic.
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return AnalyzeResponse(
        characters=len(document.text),
        words=len(words),
        unique_words=len(counts),
        top_words=[WordCount(word=word, count=count) for word, count in ranked[:top]],
    )
