"""Step 02, solved: the request and response schemas of the ticket and wine prediction API.

Steps 03 to 05 serve real models behind these very schemas, so they say exactly what a
client may send and what it gets back, and nothing about how the models work inside.
"""

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

MAX_TEXT_LENGTH = 2000  # characters, after stripping: a long support ticket, not a document
MAX_BATCH_SIZE = 100  # wines per batch request

TicketLabel = Literal["account", "billing", "shipping", "technical"]
WineClass = Literal["class_0", "class_1", "class_2"]

# The first wine of scikit-learn's data set (a class_0 wine): a realistic, valid example.
EXAMPLE_WINE = {
    "alcohol": 14.23,
    "malic_acid": 1.71,
    "ash": 2.43,
    "alcalinity_of_ash": 15.6,
    "magnesium": 127.0,
    "total_phenols": 2.8,
    "flavanoids": 3.06,
    "nonflavanoid_phenols": 0.28,
    "proanthocyanins": 2.29,
    "color_intensity": 5.64,
    "hue": 1.04,
    "od280_od315_of_diluted_wines": 3.92,
    "proline": 1065.0,
}


class TicketRequest(BaseModel):
    """A customer-support message to route to the right team."""

    # Strip first, then check the length: a message of spaces is empty, not valid.
    text: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT_LENGTH),
        Field(
            description="The message, as the customer wrote it.",
            examples=["I was charged twice for my subscription this month."],
        ),
    ]
    # The model was trained on English tickets only; asking for another language is an error,
    # not a silent guess.
    language: Literal["en"] = "en"


class TicketPrediction(BaseModel):
    """The team a ticket goes to, and how sure the model is."""

    label: TicketLabel
    confidence: Annotated[float, Field(ge=0, le=1)]


class WineFeatures(BaseModel):
    """The 13 chemical measurements of one wine, named as in `coursekit.datasets.WINE_FEATURES`.

    Every bound is wider than anything in the training data, but physically sensible: a
    value outside it is a client's bug (wrong unit, wrong column), not an unusual wine.
    """

    # A model turns NaN or infinity into a confident nonsense prediction: refuse them all.
    model_config = ConfigDict(allow_inf_nan=False, json_schema_extra={"examples": [EXAMPLE_WINE]})

    alcohol: Annotated[float, Field(ge=0, le=25, description="Alcohol, % by volume")]
    malic_acid: Annotated[float, Field(ge=0, le=10)]
    ash: Annotated[float, Field(ge=0, le=5)]
    alcalinity_of_ash: Annotated[float, Field(ge=0, le=50)]
    magnesium: Annotated[float, Field(ge=0, le=300)]
    total_phenols: Annotated[float, Field(ge=0, le=6)]
    flavanoids: Annotated[float, Field(ge=0, le=8)]
    nonflavanoid_phenols: Annotated[float, Field(ge=0, le=2)]
    proanthocyanins: Annotated[float, Field(ge=0, le=5)]
    color_intensity: Annotated[float, Field(ge=0, le=20)]
    hue: Annotated[float, Field(ge=0, le=3)]
    od280_od315_of_diluted_wines: Annotated[float, Field(ge=0, le=6)]
    proline: Annotated[float, Field(ge=0, le=3000)]

    @model_validator(mode="after")
    def nonflavanoids_are_part_of_total_phenols(self) -> Self:
        # A rule about two fields at once: it can only run once both are validated.
        if self.nonflavanoid_phenols > self.total_phenols:
            raise ValueError(
                "nonflavanoid_phenols cannot exceed total_phenols: they are a part of them"
            )
        return self


class WinePrediction(BaseModel):
    """The cultivar a wine comes from, and how sure the model is."""

    label: WineClass
    confidence: Annotated[float, Field(ge=0, le=1)]


class WineBatch(BaseModel):
    """Several wines to classify in one request."""

    instances: Annotated[list[WineFeatures], Field(min_length=1, max_length=MAX_BATCH_SIZE)]


class WineBatchPrediction(BaseModel):
    """One prediction per wine, in the order of the request's instances."""

    predictions: list[WinePrediction]
