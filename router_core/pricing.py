"""What one request to a model costs: prices, token estimates, expected cost.

Prices are in any one unit (USD by convention) per million input/output tokens plus per request.
Before a request is answered only its prompt's length is known, so input tokens are estimated
from characters; real usage is billed from the upstream's token counts.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

# Characters per token for the input-length estimate behind expected costs: close enough for
# ranking by price, which is all it is used for.
CHARS_PER_TOKEN = 4.0


class InvalidField(ValueError):
    """A value that cannot be accepted; `field` names it (dotted for nested fields)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def validate_price(field_name: str, value: object) -> float:
    """A price: a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidField(field_name, f"must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise InvalidField(field_name, f"must be finite and >= 0, got {value!r}")
    return float(value)


@dataclass
class Price:
    """A model's price: per million input and output tokens, plus per request."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    per_request: float = 0.0

    # Checked at every assignment, the constructor's included: a price changed after it was made
    # (a routed model's, kept by reference) went into the next model table unchecked, and a
    # negative one won every routing at a negative expected cost.
    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, validate_price(f"cost.{name}", value) if name in _FIELDS else value)

    def expected(self, input_tokens: float, output_tokens: float) -> float:
        """Cost of one request with these token counts."""
        return self.per_request + (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Price":
        if not isinstance(data, dict):
            raise InvalidField("cost", f"expected a JSON object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


_FIELDS = frozenset(f.name for f in fields(Price))


def estimate_tokens(text_chars: int | float) -> float:
    """Prompt tokens estimated from its length in characters."""
    return text_chars / CHARS_PER_TOKEN
