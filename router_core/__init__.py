"""The UniRoute algorithm, in process: `UniRouter` routes prompts among models known only by
their answers on a representative prompt set (see router_core.router)."""
from router_core.pricing import Price
from router_core.profiles import Profile
from router_core.router import (
           Candidate,
           Decision,
           NoRoutableModel,
           RoutedModel,
           UniRouter,
)
from router_core.targets import NotCalibrated, RoutingTarget

__all__ = ["Candidate", "Decision", "NoRoutableModel", "NotCalibrated", "Price", "Profile", "RoutedModel",
           "RoutingTarget", "UniRouter"]
