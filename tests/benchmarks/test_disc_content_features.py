"""The signal-combination ceiling of `benchmarks.disc_content_features`: the logistic fit against known weights."""

import numpy as np

from benchmarks.disc_content_features import COMBINATIONS, combined, logistic_fit, mlp_scores
from llm_i2i.llm.sft_metrics import roc_auc


def test_logistic_fit_recovers_the_weights_that_made_the_labels():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 3))
    true = np.array([2.0, -1.0, 0.0])
    y = (rng.random(len(x)) < 1 / (1 + np.exp(-(x @ true - 0.5)))).astype(float)
    w = logistic_fit(x, y)
    assert np.allclose(w[:3], true, atol=0.1) and abs(w[3] + 0.5) < 0.1


def test_combination_is_fit_on_validation_and_scored_on_test():
    rng = np.random.default_rng(1)
    signals, labels = {}, {}
    cols = COMBINATIONS["every signal, the discriminator too"]
    for which in ("valid", "test"):
        labels[which] = np.repeat([1, 0], 3000)
        signals[which] = {c: rng.normal(size=6000) for c in cols}
        # one informative signal, on a scale and sign the fit has to find
        signals[which]["generator_log_prob"] = -5.0 * labels[which] + rng.normal(scale=4.0, size=6000)
    out = combined(signals, labels)["every signal, the discriminator too"]
    alone = roc_auc(labels["test"], -signals["test"]["generator_log_prob"])
    assert abs(out["test_auc"] - alone) < 0.02 and out["weights"]["generator_log_prob"] < 0
    assert abs(out["mlp_test_auc"] - alone) < 0.02


def test_mlp_finds_an_interaction_a_logistic_regression_cannot():
    # label = sign(x0 * x1): no linear score beats chance, a small MLP separates it
    rng = np.random.default_rng(2)
    x, x_test = rng.normal(size=(6000, 2)), rng.normal(size=(3000, 2))
    y, y_test = (x[:, 0] * x[:, 1] > 0).astype(float), (x_test[:, 0] * x_test[:, 1] > 0).astype(float)
    w = logistic_fit(x, y)
    assert abs(roc_auc(y_test, np.c_[x_test, np.ones(len(x_test))] @ w) - 0.5) < 0.05
    scores, step = mlp_scores(x, y, x_test)
    assert roc_auc(y_test, scores) > 0.9 and step > 0
