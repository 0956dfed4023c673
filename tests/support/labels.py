"""Label surgery for the UniRoute contract's tests: a new LLM is known only from its answers on
the representative (validation) prompts."""
from __future__ import annotations

import numpy as np


def flipped_outside_validation(scores: np.ndarray, split) -> np.ndarray:
    """`scores` with every test LLM's label flipped on every prompt outside the split's
    validation prompts: a router keeping the contract decides the same on both."""
    flipped = scores.copy()
    hidden = np.setdiff1d(np.arange(scores.shape[0]), split.val_prompts)
    flipped[np.ix_(hidden, split.test_models)] = 1.0 - flipped[np.ix_(hidden, split.test_models)]
    return flipped
