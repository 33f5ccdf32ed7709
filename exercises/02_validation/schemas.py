"""Step 02: the request and response schemas of a ticket and wine prediction API.

Read README.md in this folder first: it states every field, bound and rule. app.py is
given and complete: it imports the six models below and serves them. Grade your work
with `pytest exercises/02_validation`.
"""

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

MAX_TEXT_LENGTH = 2000  # characters, after stripping
MAX_BATCH_SIZE = 100  # wines per batch request


class TicketRequest(BaseModel):
    """A customer-support message to route to the right team."""

    # TODO: the two fields of README.md's table ("Field constraints", "Literal and enums"):
    # - `text`: required; surrounding whitespace stripped before its length (1 to
    #   MAX_TEXT_LENGTH) is checked, and an example in the schema ("Schema examples");
    # - `language`: "en" and nothing else, and "en" when the client leaves it out.
    pass


class TicketPrediction(BaseModel):
    """The team a ticket goes to, and how sure the model is."""

    # TODO: exactly the two fields of README.md, and no other ("Response models and
    # filtering"): `label`, one of the four teams, documented as their list ("Literal and
    # enums"); `confidence`, a number from 0 to 1, both included ("Field constraints").
    pass


class WineFeatures(BaseModel):
    """The 13 chemical measurements of one wine."""

    # TODO: the 13 required numbers of README.md's table, named as there, each within its
    # bounds, both included ("Field constraints"); NaN and infinity refused in every one
    # as `finite_number` ("NaN and infinity"); one whole, valid wine as the model's
    # example in the schema ("Schema examples in /openapi.json").

    @model_validator(mode="after")
    def nonflavanoids_are_part_of_total_phenols(self) -> Self:
        # TODO: refuse a wine whose nonflavanoid phenols exceed its total phenols (equal is
        # fine), with a message that says why; accept every other wine ("Field and model
        # validators").
        raise NotImplementedError


class WinePrediction(BaseModel):
    """The cultivar a wine comes from, and how sure the model is."""

    # TODO: like TicketPrediction, with `label` one of the three classes of README.md.
    pass


class WineBatch(BaseModel):
    """Several wines to classify in one request."""

    # TODO: `instances`, the wines to classify: 1 to MAX_BATCH_SIZE of them, each checked
    # as a WineFeatures, so an error names its place ("Nested models and lists").
    pass


class WineBatchPrediction(BaseModel):
    """One prediction per wine, in the order of the request's instances."""

    # TODO: `predictions`, one WinePrediction per wine, in order (README.md).
    pass
