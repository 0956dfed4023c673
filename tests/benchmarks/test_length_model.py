import numpy as np
import pytest

from benchmarks.length_model import fit_length_model


def _planted(n=400, d=16, noise=0.1, seed=0):
    """Unit embeddings whose log length is linear in them, plus noise."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, d))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    direction = rng.normal(size=d)
    log_len = 5.0 + 3.0 * emb @ direction + noise * rng.normal(size=n)
    return emb, np.exp(log_len), direction


def test_the_fitted_model_predicts_held_out_lengths_from_the_direction_they_follow():
    emb, lengths, _ = _planted()
    model = fit_length_model(emb[:300], lengths[:300])
    predicted = np.log(model.predict(emb[300:]))
    assert np.corrcoef(predicted, np.log(lengths[300:]))[0, 1] > 0.95


def test_pure_noise_chooses_the_strongest_ridge_and_predicts_near_the_mean():
    emb, _, _ = _planted()
    lengths = np.exp(np.random.default_rng(1).normal(5.0, 1.0, size=len(emb)))
    model = fit_length_model(emb, lengths)
    assert model.alpha == 100.0
    assert np.std(np.log(model.predict(emb))) < 0.5  # the data's spread is 1


def test_unknown_lengths_are_left_out_and_too_few_refused():
    emb, lengths, _ = _planted()
    holed = lengths.copy()
    holed[::2] = np.nan
    holed[1] = 0.0
    kept = np.isfinite(holed) & (holed > 0)
    a, b = fit_length_model(emb, holed), fit_length_model(emb[kept], holed[kept])
    np.testing.assert_allclose(a.weights, b.weights)
    with pytest.raises(ValueError, match="at least 3"):
        fit_length_model(emb[:5], np.array([1.0, np.nan, 0.0, 2.0, np.nan]))


def test_a_prompt_unlike_any_fitted_is_priced_within_the_range_seen():
    emb, lengths, direction = _planted()
    model = fit_length_model(emb, lengths)
    far = 50.0 * direction[None, :]  # far beyond every fitted prompt along the direction
    assert model.predict(far)[0] == pytest.approx(np.exp(model.high))
    assert model.predict(-far)[0] == pytest.approx(np.exp(model.low))


def test_relative_lengths_average_one_over_the_reference_prompts():
    emb, lengths, _ = _planted()
    model = fit_length_model(emb, lengths)
    assert model.relative(emb[:50], emb[:50]).mean() == pytest.approx(1.0)
    np.testing.assert_allclose(model.relative(emb[50:60], emb[:50]) * model.predict(emb[:50]).mean(),
                               model.predict(emb[50:60]))
