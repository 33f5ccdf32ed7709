"""Graded tests for step 02. Read them: they are the exact contract of the exercise.

Run them with `pytest exercises/02_validation`. Points and hints live in course.toml;
the fixtures come from the grader: `client` is a `TestClient` on the `app` in app.py
(given, not yours to edit), freshly imported with your schemas.py for each test.
"""

import json
from collections.abc import Iterator
from typing import Any

from autograder.expect import (
    expect_equal,
    expect_exact_keys,
    expect_json,
    expect_validation_error,
)

TICKET_LABELS = ["account", "billing", "shipping", "technical"]
WINE_CLASSES = ["class_0", "class_1", "class_2"]
MAX_TEXT_LENGTH = 2000
MAX_BATCH_SIZE = 100
MAX_BODY_SIZE = 65_536  # bytes: app.py's limit on a request body

# The contract's upper bound of every feature; every lower bound is 0.
FEATURE_BOUNDS = {
    "alcohol": 25,
    "malic_acid": 10,
    "ash": 5,
    "alcalinity_of_ash": 50,
    "magnesium": 300,
    "total_phenols": 6,
    "flavanoids": 8,
    "nonflavanoid_phenols": 2,
    "proanthocyanins": 5,
    "color_intensity": 20,
    "hue": 3,
    "od280_od315_of_diluted_wines": 6,
    "proline": 3000,
}

# Three real wines of scikit-learn's wine data set (a class_0, a class_1, a class_2 wine).
WINE = {
    "alcohol": 14.23,
    "malic_acid": 1.71,
    "ash": 2.43,
    "alcalinity_of_ash": 15.6,
    "magnesium": 127,
    "total_phenols": 2.8,
    "flavanoids": 3.06,
    "nonflavanoid_phenols": 0.28,
    "proanthocyanins": 2.29,
    "color_intensity": 5.64,
    "hue": 1.04,
    "od280_od315_of_diluted_wines": 3.92,
    "proline": 1065,
}
OTHER_WINE = {
    "alcohol": 12.37,
    "malic_acid": 0.94,
    "ash": 1.36,
    "alcalinity_of_ash": 10.6,
    "magnesium": 88,
    "total_phenols": 1.98,
    "flavanoids": 0.57,
    "nonflavanoid_phenols": 0.28,
    "proanthocyanins": 0.42,
    "color_intensity": 1.95,
    "hue": 1.05,
    "od280_od315_of_diluted_wines": 1.82,
    "proline": 520,
}
THIRD_WINE = {
    "alcohol": 12.86,
    "malic_acid": 1.35,
    "ash": 2.32,
    "alcalinity_of_ash": 18,
    "magnesium": 122,
    "total_phenols": 1.51,
    "flavanoids": 1.25,
    "nonflavanoid_phenols": 0.21,
    "proanthocyanins": 0.94,
    "color_intensity": 4.1,
    "hue": 0.76,
    "od280_od315_of_diluted_wines": 1.29,
    "proline": 630,
}
TICKET = {"text": "I was charged twice for my subscription, please refund me."}
# One ticket for each team, and the team app.py's stand-in model sends it to.
TEAM_TICKETS = {
    "account": "I forgot my password and cannot login to my account",
    "shipping": "My package has not arrived and the tracking page is empty",
    "technical": "The app crashes with an error since the last update",
}


JSON_HEADERS = {"content-type": "application/json"}


def post_raw_json(client: Any, url: str, body: dict[str, Any]) -> Any:
    """POST `body` as JSON text, non-finite floats included: Python writes NaN as `NaN`."""
    text = json.dumps(body)  # allow_nan=True by default: the tokens NaN, Infinity, -Infinity
    return client.post(url, content=text.encode(), headers={"content-type": "application/json"})


def padded(body: dict[str, Any], size: int) -> bytes:
    """`body` as JSON, padded with spaces to exactly `size` bytes: still valid JSON."""
    data = json.dumps(body).encode()
    return data + b" " * (size - len(data))


def chunked(data: bytes, chunk: int = 16_384) -> Iterator[bytes]:
    """`data` in pieces: a generator has no length, so the body goes out without Content-Length."""
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]


def expect_prediction(prediction: Any, labels: list[str], what: str) -> None:
    """A prediction object holds exactly `label` (one of `labels`) and `confidence` in [0, 1]."""
    expect_exact_keys(prediction, ["label", "confidence"], what)
    expect_equal(prediction["label"] in labels, True, f"{what}: is label one of {labels}")
    confidence = prediction["confidence"]
    expect_equal(
        isinstance(confidence, int | float) and 0 <= confidence <= 1,
        True,
        f"{what}: is confidence ({confidence!r}) a number between 0 and 1",
    )


# -- valid requests, exact responses ---------------------------------------------------


def test_ticket_prediction_has_exactly_the_documented_fields(client):
    body = expect_json(client.post("/tickets/predict", json=TICKET))
    expect_prediction(body, TICKET_LABELS, "POST /tickets/predict")
    body = expect_json(client.post("/tickets/predict", json={**TICKET, "language": "en"}))
    expect_prediction(body, TICKET_LABELS, 'POST /tickets/predict with "language": "en"')
    # The README's example, exactly.
    text = "I was charged twice, please refund me."
    body = expect_json(client.post("/tickets/predict", json={"text": text}))
    expect_equal(
        body, {"label": "billing", "confidence": 0.5}, f'POST /tickets/predict for "{text}"'
    )
    # Every team is a label a prediction can carry.
    for team, text in TEAM_TICKETS.items():
        body = expect_json(client.post("/tickets/predict", json={"text": text}))
        expect_prediction(body, TICKET_LABELS, f'POST /tickets/predict for "{text}"')
        expect_equal(body["label"], team, f'the label for "{text}"')


def test_wine_predictions_have_exactly_the_documented_fields(client):
    body = expect_json(client.post("/wine/predict", json=WINE))
    expect_prediction(body, WINE_CLASSES, "POST /wine/predict")
    wines = [THIRD_WINE, WINE, OTHER_WINE]
    singles = []
    for index, wine in enumerate(wines):
        prediction = expect_json(client.post("/wine/predict", json=wine))
        expect_prediction(prediction, WINE_CLASSES, f"POST /wine/predict for wine {index}")
        singles.append(prediction)
    expect_equal(
        sorted(prediction["label"] for prediction in singles),
        WINE_CLASSES,
        "the labels of a class_0, a class_1 and a class_2 wine",
    )
    body = expect_json(client.post("/wine/predict/batch", json={"instances": wines}))
    expect_exact_keys(body, ["predictions"], "POST /wine/predict/batch")
    expect_equal(len(body["predictions"]), 3, "the number of predictions for 3 instances")
    for index, prediction in enumerate(body["predictions"]):
        expect_prediction(prediction, WINE_CLASSES, f"POST /wine/predict/batch, prediction {index}")
    expect_equal(
        body["predictions"],
        singles,
        "the batch's predictions, one per instance in order (as POST /wine/predict answers each)",
    )


# -- the ticket's constraints ----------------------------------------------------------


def test_empty_or_blank_text_is_a_422(client):
    expect_json(client.post("/tickets/predict", json=TICKET))
    expect_validation_error(
        client.post("/tickets/predict", json={"text": ""}),
        loc=["body", "text"],
        error_type="string_too_short",
    )
    # Blank is empty once stripped; any error type will do, as long as it names `text`.
    expect_validation_error(
        client.post("/tickets/predict", json={"text": "  \n\t "}), ["body", "text"]
    )


def test_text_is_a_required_string(client):
    expect_json(client.post("/tickets/predict", json=TICKET))
    expect_validation_error(
        client.post("/tickets/predict", json={"language": "en"}),
        loc=["body", "text"],
        error_type="missing",
    )
    for not_a_string in (42, None, ["a", "list"]):
        expect_validation_error(
            client.post("/tickets/predict", json={"text": not_a_string}), ["body", "text"]
        )


def test_too_long_text_is_a_422(client):
    expect_json(client.post("/tickets/predict", json={"text": "a" * MAX_TEXT_LENGTH}))
    expect_validation_error(
        client.post("/tickets/predict", json={"text": "a" * (MAX_TEXT_LENGTH + 1)}),
        loc=["body", "text"],
        error_type="string_too_long",
    )
    # The length is counted once the surrounding whitespace is stripped.
    padded = "  " + "a" * MAX_TEXT_LENGTH + " \n"
    response = client.post("/tickets/predict", json={"text": padded})
    if response.status_code != 200:
        raise AssertionError(
            f"POST /tickets/predict with {MAX_TEXT_LENGTH} characters between surrounding "
            f"spaces answered {response.status_code}, expected 200: stripped, the text is "
            f"{MAX_TEXT_LENGTH} characters long. Response body: {response.text[:300]}"
        )
    expect_validation_error(
        client.post("/tickets/predict", json={"text": " " + "a" * (MAX_TEXT_LENGTH + 1) + " "}),
        loc=["body", "text"],
        error_type="string_too_long",
    )


def test_unsupported_language_is_a_422(client):
    expect_json(client.post("/tickets/predict", json={**TICKET, "language": "en"}))
    expect_validation_error(
        client.post("/tickets/predict", json={**TICKET, "language": "fr"}),
        loc=["body", "language"],
        error_type="literal_error",
    )
    # "en" only: not another spelling of it, and not null (leave the field out instead).
    for language in ("EN", None):
        expect_validation_error(
            client.post("/tickets/predict", json={**TICKET, "language": language}),
            loc=["body", "language"],
        )


# -- the wine's constraints ------------------------------------------------------------


def test_out_of_range_feature_is_a_422(client):
    # The bounds themselves are valid: all zeros, and every feature at its maximum.
    expect_json(client.post("/wine/predict", json=dict.fromkeys(FEATURE_BOUNDS, 0)))
    expect_json(client.post("/wine/predict", json=FEATURE_BOUNDS))
    # Every feature is a float: a fraction is valid in each one, magnesium and proline too.
    fractions = {feature: upper / 2 + 0.25 for feature, upper in FEATURE_BOUNDS.items()}
    expect_json(client.post("/wine/predict", json=fractions))
    for feature, upper in FEATURE_BOUNDS.items():
        error = expect_validation_error(
            client.post("/wine/predict", json={**WINE, feature: upper + 0.01}),
            loc=["body", feature],
            error_type="less_than_equal",
        )
        expect_equal(error.get("ctx", {}).get("le"), upper, f"the upper bound of {feature}")
        expect_validation_error(
            client.post("/wine/predict", json={**WINE, feature: -0.01}),
            loc=["body", feature],
            error_type="greater_than_equal",
        )


def test_missing_feature_is_a_422(client):
    expect_json(client.post("/wine/predict", json=WINE))
    for feature in FEATURE_BOUNDS:
        incomplete = {name: value for name, value in WINE.items() if name != feature}
        expect_validation_error(
            client.post("/wine/predict", json=incomplete),
            loc=["body", feature],
            error_type="missing",
        )


def test_nan_and_infinity_are_a_422(client):
    expect_json(post_raw_json(client, "/wine/predict", WINE))
    # Every feature, every non-finite value.
    for feature in FEATURE_BOUNDS:
        for value in ("nan", "inf", "-inf"):
            expect_validation_error(
                post_raw_json(client, "/wine/predict", {**WINE, feature: float(value)}),
                loc=["body", feature],
                error_type="finite_number",
            )


def test_batch_must_hold_1_to_100_instances(client):
    expect_json(client.post("/wine/predict/batch", json={"instances": [WINE]}))
    body = expect_json(
        client.post("/wine/predict/batch", json={"instances": [WINE] * MAX_BATCH_SIZE})
    )
    expect_equal(len(body.get("predictions", [])), MAX_BATCH_SIZE, "predictions for 100 wines")
    expect_validation_error(
        client.post("/wine/predict/batch", json={"instances": []}),
        loc=["body", "instances"],
        error_type="too_short",
    )
    expect_validation_error(
        client.post("/wine/predict/batch", json={"instances": [WINE] * (MAX_BATCH_SIZE + 1)}),
        loc=["body", "instances"],
        error_type="too_long",
    )


def test_batch_errors_point_at_the_bad_instance(client):
    expect_json(client.post("/wine/predict/batch", json={"instances": [WINE, OTHER_WINE]}))
    instances = [WINE, OTHER_WINE, {**WINE, "alcohol": 99}]
    expect_validation_error(
        client.post("/wine/predict/batch", json={"instances": instances}),
        loc=["body", "instances", 2, "alcohol"],
        error_type="less_than_equal",
    )


def test_nonflavanoid_phenols_cannot_exceed_total_phenols(client):
    expect_json(client.post("/wine/predict", json=WINE))
    # Equal is allowed: all of a wine's phenols may be nonflavanoid ones.
    expect_json(
        client.post(
            "/wine/predict", json={**WINE, "total_phenols": 0.5, "nonflavanoid_phenols": 0.5}
        )
    )
    impossible = {**WINE, "total_phenols": 0.5, "nonflavanoid_phenols": 0.6}
    expect_validation_error(
        client.post("/wine/predict", json=impossible), loc=["body"], error_type="value_error"
    )
    expect_validation_error(
        client.post("/wine/predict/batch", json={"instances": [WINE, impossible]}),
        loc=["body", "instances", 1],
        error_type="value_error",
    )


# -- the size of the body (app.py's limit, with your schemas) --------------------------------


def test_a_body_over_the_size_limit_is_a_413(client):
    # A body of exactly MAX_BODY_SIZE bytes is read, validated by your schemas and answered.
    at_limit = padded(TICKET, MAX_BODY_SIZE)
    body = expect_json(client.post("/tickets/predict", content=at_limit, headers=JSON_HEADERS))
    expect_prediction(
        body, TICKET_LABELS, f"POST /tickets/predict with a {MAX_BODY_SIZE}-byte body"
    )
    # One byte more is refused before it is parsed: with Content-Length, and streamed.
    for how, content in (
        ("declared", padded(TICKET, MAX_BODY_SIZE + 1)),
        ("streamed", chunked(padded({"instances": [WINE]}, MAX_BODY_SIZE + 1))),
    ):
        url = "/tickets/predict" if how == "declared" else "/wine/predict/batch"
        response = client.post(url, content=content, headers=JSON_HEADERS)
        what = f"POST {url} with a {how} body of {MAX_BODY_SIZE + 1} bytes"
        expect_equal(response.status_code, 413, f"the status of {what}")
        expect_equal(
            "content too large" in response.text.lower(),
            True,
            f"does the answer to {what} say why ({response.text[:100]!r})",
        )


# -- the documentation -----------------------------------------------------------------


def openapi_components(client: Any) -> dict[str, Any]:
    schema = expect_json(client.get("/openapi.json"))
    return schema.get("components", {}).get("schemas", {})


def resolve(components: dict[str, Any], holder: dict[str, Any]) -> dict[str, Any]:
    """The schema a `{"$ref": ...}` points to (or `holder` itself when it is no reference)."""
    ref = holder.get("$ref")
    if ref is None:
        return holder
    return components.get(ref.rsplit("/", 1)[-1], {})


def component(components: dict[str, Any], name: str) -> dict[str, Any]:
    if name not in components:
        raise AssertionError(f"/openapi.json documents no schema named {name}.")
    return components[name]


def test_openapi_shows_the_constraints(client):
    components = openapi_components(client)
    text = component(components, "TicketRequest").get("properties", {}).get("text", {})
    expect_equal(
        (text.get("minLength"), text.get("maxLength")),
        (1, MAX_TEXT_LENGTH),
        "in /openapi.json, (minLength, maxLength) of TicketRequest.text",
    )
    wine = component(components, "WineFeatures")
    expect_equal(
        sorted(wine.get("required", [])),
        sorted(FEATURE_BOUNDS),
        "in /openapi.json, the required fields of WineFeatures",
    )
    for feature, upper in FEATURE_BOUNDS.items():
        documented = wine.get("properties", {}).get(feature, {})
        expect_equal(
            (documented.get("minimum"), documented.get("maximum")),
            (0, upper),
            f"in /openapi.json, (minimum, maximum) of WineFeatures.{feature}",
        )
    instances = component(components, "WineBatch").get("properties", {}).get("instances", {})
    expect_equal(
        (instances.get("minItems"), instances.get("maxItems")),
        (1, MAX_BATCH_SIZE),
        "in /openapi.json, (minItems, maxItems) of WineBatch.instances",
    )


def test_openapi_documents_the_labels_and_confidence(client):
    components = openapi_components(client)
    for name, labels in (("TicketPrediction", TICKET_LABELS), ("WinePrediction", WINE_CLASSES)):
        properties = component(components, name).get("properties", {})
        label = resolve(components, properties.get("label", {}))
        expect_equal(
            sorted(label.get("enum", [])), labels, f"in /openapi.json, the values of {name}.label"
        )
        confidence = properties.get("confidence", {})
        expect_equal(
            (confidence.get("minimum"), confidence.get("maximum")),
            (0, 1),
            f"in /openapi.json, (minimum, maximum) of {name}.confidence",
        )


def documented_example(components: dict[str, Any], name: str) -> dict[str, Any]:
    """A model's example: the model's own `examples`, or one built from its fields' examples."""
    schema = component(components, name)
    if schema.get("examples"):
        return schema["examples"][0]
    if schema.get("example"):
        return schema["example"]
    example = {}
    for field, documented in schema.get("properties", {}).items():
        if documented.get("examples"):
            example[field] = documented["examples"][0]
    if not example:
        raise AssertionError(f"/openapi.json shows no example for {name}.")
    return example


def test_openapi_examples_are_valid_requests(client):
    components = openapi_components(client)
    for name, url in (("TicketRequest", "/tickets/predict"), ("WineFeatures", "/wine/predict")):
        example = documented_example(components, name)
        response = client.post(url, json=example)
        if response.status_code != 200:
            raise AssertionError(
                f"The example /openapi.json shows for {name} is not a valid request: "
                f"POST {url} with it answered {response.status_code}: {response.text[:300]}"
            )
