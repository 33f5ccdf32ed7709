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

    # TODO: declare two fields:
    # - `text`: a string, stripped of surrounding whitespace, then 1 to MAX_TEXT_LENGTH
    #   characters long. Use Annotated with StringConstraints (or Field plus the model
    #   config `str_strip_whitespace`); give it an example with Field(examples=[...]).
    # - `language`: only "en" is allowed (a Literal), and it defaults to "en".
    pass


class TicketPrediction(BaseModel):
    """The team a ticket goes to, and how sure the model is."""

    # TODO: declare exactly two fields, and nothing else:
    # - `label`: one of "account", "billing", "shipping", "technical" (a Literal);
    # - `confidence`: a float from 0 to 1, both included (Field(ge=..., le=...)).
    pass


class WineFeatures(BaseModel):
    """The 13 chemical measurements of one wine."""

    # TODO: declare the 13 required float fields of README.md's table, in its order and
    # with its names, each with its bounds: Annotated[float, Field(ge=0, le=...)].
    # Refuse NaN and infinity in every field (ConfigDict(allow_inf_nan=False) says it once),
    # and show one whole valid wine as the model's example (json_schema_extra).

    @model_validator(mode="after")
    def nonflavanoids_are_part_of_total_phenols(self) -> Self:
        # TODO: raise ValueError (with a message that says why) when nonflavanoid_phenols
        # is greater than total_phenols; equal is fine. Otherwise return self.
        raise NotImplementedError


class WinePrediction(BaseModel):
    """The cultivar a wine comes from, and how sure the model is."""

    # TODO: like TicketPrediction, with `label` one of "class_0", "class_1", "class_2".
    pass


class WineBatch(BaseModel):
    """Several wines to classify in one request."""

    # TODO: declare `instances`: a list of WineFeatures holding 1 to MAX_BATCH_SIZE wines
    # (Field(min_length=..., max_length=...) on the list).
    pass


class WineBatchPrediction(BaseModel):
    """One prediction per wine, in the order of the request's instances."""

    # TODO: declare `predictions`: a list of WinePrediction.
    pass
