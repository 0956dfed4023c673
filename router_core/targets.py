"""Routing targets: what a client asks the router for, and the cost weight λ that gives it.

A target is one of
- a cost weight λ (`uniroute`, `uniroute:0.3`, `"cost_weight"` in the body),
- a budget: the best expected score whose expected cost per request is at most the budget
  (`uniroute:budget=0.001`, `"budget"`),
- a quality: the cheapest routing whose expected score reaches that fraction of the best single
  model's expected score (`uniroute:quality=0.95`, `"quality"`),
and a named policy of the config (`uniroute:economy`, `"policy"`) holds one of them. Budgets and
qualities become λ through the models' calibration curve (router_core.calibration), measured on
the representative set.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from router_core.calibration import Calibration

Kind = Literal["cost_weight", "budget", "quality"]


class NotCalibrated(ValueError):
    """A budget or quality target asked of a router with no λ curve (no representative set, or
    no model to measure it on)."""

KINDS: tuple[Kind, ...] = ("cost_weight", "budget", "quality")


@dataclass(frozen=True)
class RoutingTarget:
    """One target, and the named policy it came from if any."""

    kind: Kind
    value: float
    policy: str | None = None

    def __post_init__(self) -> None:
        # The HTTP edge checks these bounds before a target is made; the in-process API and a
        # router's default λ come straight here, and a NaN or negative value, or a quality given
        # in percent, would otherwise route without a word.
        if self.kind not in KINDS:
            raise ValueError(f"unknown target {self.kind!r}; expected one of {KINDS}")
        if not (math.isfinite(self.value) and self.value >= 0):
            raise ValueError(f"{self.kind} must be a finite number >= 0, got {self.value}")
        if self.kind == "quality" and not 0 < self.value <= 1:
            raise ValueError(f"quality is a fraction of the best model's score, in (0, 1]; got {self.value}")


@dataclass(frozen=True)
class Resolution:
    """The λ a target asks for, whether the curve can meet it, and what the curve expects of it
    (None without a curve: no representative set or no model)."""

    target: RoutingTarget
    cost_weight: float
    met: bool
    expected_score: float | None = None
    expected_cost: float | None = None

    def to_dict(self) -> dict:
        """For `/v1/route`."""
        return {"kind": self.target.kind, "value": self.target.value, "policy": self.target.policy,
                "cost_weight": self.cost_weight, "met": self.met,
                "expected_score": self.expected_score, "expected_cost": self.expected_cost}


def resolve(target: RoutingTarget, curve: Calibration | None) -> Resolution:
    """The cost weight for `target` on `curve`. A budget or quality needs a curve (NotCalibrated
    without one); a budget below the cheapest routing's expected cost gets the cheapest routing,
    with met=False."""
    if target.kind == "cost_weight":
        if curve is None:
            return Resolution(target, target.value, True)
        p = curve.piece(target.value)
        return Resolution(target, target.value, True, float(curve.score[p]), float(curve.cost[p]))
    if curve is None:
        raise NotCalibrated(f"a {target.kind} target needs the calibration curve, which is not built yet")
    p, met = curve.for_budget(target.value) if target.kind == "budget" else curve.for_quality(target.value)
    return Resolution(target, float(curve.lambdas[p]), met, float(curve.score[p]), float(curve.cost[p]))
