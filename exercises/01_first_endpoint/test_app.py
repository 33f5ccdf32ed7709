"""Graded tests for step 01. Read them: they are the exact contract of the exercise.

Run them with `pytest exercises/01_first_endpoint`. Points and hints live in
course.toml; the fixtures (`client`, `app`) come from the grader: `client` is a
`TestClient` on the `app` in your app.py, freshly imported for each test.
"""

from autograder.expect import (
    expect_equal,
    expect_exact_keys,
    expect_fields,
    expect_json,
    expect_validation_error,
)

SENTENCE = "The cat saw the other cat and the dog"
# The example of the README, and its answer.
README_TEXT = "The cat saw the other cat"
README_ANSWER = {
    "characters": 25,
    "words": 6,
    "unique_words": 4,
    "top_words": [{"word": "cat", "count": 2}, {"word": "the", "count": 2}],
}


def expect_whole_numbers(body: dict, what: str) -> None:
    """Every count in an answer is a JSON integer (`25`), not a float (`25.0`)."""
    counts = {key: body.get(key) for key in ("characters", "words", "unique_words")}
    for index, item in enumerate(body.get("top_words", [])):
        counts[f"top_words[{index}].count"] = item.get("count")
    for key, value in counts.items():
        if type(value) is not int:
            raise AssertionError(f"{what}: {key} should be an integer, got {value!r}.")


def test_health_returns_ok(client):
    body = expect_json(client.get("/health"))
    expect_equal(body, {"status": "ok"}, "GET /health")


def test_analyze_counts_characters_and_words(client):
    body = expect_json(client.post("/analyze", json={"text": "Hello,  brave new world!"}))
    expect_fields(
        body, {"characters": 24, "words": 4}, 'POST /analyze for "Hello,  brave new world!"'
    )
    # Characters, not bytes (ï is one character, two bytes in UTF-8); a tab and a
    # newline separate words as a space does.
    text = "naïve café\tcrème\nbrûlée"
    body = expect_json(client.post("/analyze", json={"text": text}))
    expect_fields(body, {"characters": 23, "words": 4}, f"POST /analyze for {text!r}")


def test_analyze_response_has_exactly_the_documented_fields(client):
    body = expect_json(client.post("/analyze", json={"text": "one two"}))
    expect_exact_keys(body, ["characters", "words", "unique_words", "top_words"], "POST /analyze")


def test_unique_words_ignore_case(client):
    body = expect_json(client.post("/analyze", json={"text": "Cat cat CAT dog"}))
    expect_fields(body, {"words": 4, "unique_words": 2}, 'POST /analyze for "Cat cat CAT dog"')


def test_top_words_are_ranked_by_count_then_alphabetically(client):
    body = expect_json(client.post("/analyze", json={"text": SENTENCE}))
    expected = [
        {"word": "the", "count": 3},
        {"word": "cat", "count": 2},
        {"word": "and", "count": 1},
    ]
    expect_equal(body["top_words"], expected, f'top_words for "{SENTENCE}" (default top=3)')


def test_punctuation_stays_part_of_a_word(client):
    # A word is a piece of text.split(): "stop!" and "stop." are words of their own.
    text = "Stop! stop stop. Stop"
    body = expect_json(client.post("/analyze", json={"text": text}))
    expect_equal(
        body,
        {
            "characters": 21,
            "words": 4,
            "unique_words": 3,
            "top_words": [
                {"word": "stop", "count": 2},
                {"word": "stop!", "count": 1},
                {"word": "stop.", "count": 1},
            ],
        },
        f'POST /analyze for "{text}"',
    )


def test_the_readme_example_is_answered_exactly(client):
    # Another text first: each answer counts its own text only, nothing from before.
    expect_json(client.post("/analyze", json={"text": "cat cat cat dog dog bird"}))
    what = (
        f'POST /analyze?top=2 for "{README_TEXT}" (sent after one for "cat cat cat dog dog bird")'
    )
    body = expect_json(client.post("/analyze?top=2", json={"text": README_TEXT}))
    expect_equal(body, README_ANSWER, what)
    expect_whole_numbers(body, what)
    body = expect_json(client.post("/analyze?top=2", json={"text": README_TEXT}))
    expect_equal(body, README_ANSWER, f'POST /analyze?top=2 for "{README_TEXT}", sent again')


def test_top_query_parameter_limits_the_list(client):
    body = expect_json(client.post("/analyze?top=1", json={"text": SENTENCE}))
    expect_equal(body["top_words"], [{"word": "the", "count": 3}], "top_words with ?top=1")
    body = expect_json(client.post("/analyze?top=10", json={"text": SENTENCE}))
    everything = [
        {"word": word, "count": count}
        for word, count in [
            ("the", 3),
            ("cat", 2),
            ("and", 1),
            ("dog", 1),
            ("other", 1),
            ("saw", 1),
        ]
    ]
    expect_equal(body["top_words"], everything, "top_words with ?top=10 (only 6 different words)")


def test_top_must_be_at_least_1(client):
    # 1 is the smallest valid `top`; below it is a 422, never a shorter list: Python's
    # [:-1] would silently drop the last word of the ranking, [:0] would answer none.
    body = expect_json(client.post("/analyze?top=1", json={"text": SENTENCE}))
    expect_equal(len(body.get("top_words", [])), 1, "the length of top_words with ?top=1")
    for top in ("0", "-1", "-5"):
        expect_validation_error(
            client.post(f"/analyze?top={top}", json={"text": SENTENCE}), loc=["query", "top"]
        )


def test_empty_and_blank_text_are_valid(client):
    body = expect_json(client.post("/analyze", json={"text": ""}))
    expect_equal(
        body,
        {"characters": 0, "words": 0, "unique_words": 0, "top_words": []},
        'POST /analyze for ""',
    )
    body = expect_json(client.post("/analyze", json={"text": " \n\t "}))
    expect_fields(body, {"characters": 4, "words": 0}, "POST /analyze for blank text")


def test_missing_text_is_a_422_naming_the_field(client):
    expect_json(client.post("/analyze", json={"text": "a valid request first"}))
    error = expect_validation_error(
        client.post("/analyze", json={"txt": "typo"}), loc=["body", "text"], error_type="missing"
    )
    expect_equal(isinstance(error.get("msg"), str), True, "the error has a message (`msg`)")


def test_text_of_the_wrong_type_is_a_422(client):
    expect_json(client.post("/analyze", json={"text": "a valid request first"}))
    expect_validation_error(
        client.post("/analyze", json={"text": 42}), loc=["body", "text"], error_type="string_type"
    )
    expect_validation_error(
        client.post("/analyze", json={"text": ["a", "list"]}), loc=["body", "text"]
    )
    # null is not a string either: `text` may be empty, never missing or null.
    expect_validation_error(client.post("/analyze", json={"text": None}), loc=["body", "text"])


def test_a_body_that_is_not_json_is_a_422(client):
    expect_json(client.post("/analyze", json={"text": "a valid request first"}))
    response = client.post(
        "/analyze", content=b"text=hello", headers={"content-type": "application/json"}
    )
    expect_validation_error(response, loc=["body", 0], error_type="json_invalid")


def test_top_must_be_a_whole_number(client):
    expect_json(client.post("/analyze?top=2", json={"text": "a valid request first"}))
    expect_validation_error(
        client.post("/analyze?top=many", json={"text": "hi"}),
        loc=["query", "top"],
        error_type="int_parsing",
    )
    expect_validation_error(
        client.post("/analyze?top=2.5", json={"text": "hi"}),
        loc=["query", "top"],
        error_type="int_parsing",
    )


def test_openapi_documents_the_request_and_response(client):
    schema = expect_json(client.get("/openapi.json"))
    operation = schema.get("paths", {}).get("/analyze", {}).get("post")
    if operation is None:
        raise AssertionError("/openapi.json has no POST /analyze operation.")
    components = schema.get("components", {}).get("schemas", {})

    def resolve(ref_holder: dict) -> dict:
        ref = ref_holder.get("$ref", "")
        return components.get(ref.rsplit("/", 1)[-1], ref_holder)

    request_schema = resolve(
        operation.get("requestBody", {})
        .get("content", {})
        .get("application/json", {})
        .get("schema", {})
    )
    expect_equal(
        request_schema.get("required"),
        ["text"],
        "in /openapi.json, the required fields of the POST /analyze body",
    )
    response_schema = resolve(
        operation.get("responses", {})
        .get("200", {})
        .get("content", {})
        .get("application/json", {})
        .get("schema", {})
    )
    expect_equal(
        sorted(response_schema.get("properties", {})),
        ["characters", "top_words", "unique_words", "words"],
        "in /openapi.json, the fields of the POST /analyze 200 response",
    )
    top = next(
        (p for p in operation.get("parameters", []) if p.get("name") == "top"), {"schema": {}}
    )
    schema_of_top = top.get("schema", {})
    # `ge=1` is documented as "minimum": 1, `gt=0` as "exclusiveMinimum": 0: both say it.
    expect_equal(
        schema_of_top.get("minimum") == 1 or schema_of_top.get("exclusiveMinimum") == 0,
        True,
        f"in /openapi.json, is the minimum of the query parameter `top` 1 (got {schema_of_top})",
    )
