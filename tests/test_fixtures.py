from driftloop.models import load_classifier, predict_proba


def test_tiny_model_round_trips_and_predicts(tiny_model) -> None:
    model, tokenizer = load_classifier(tiny_model.path)
    assert model.config.hidden_size == 32 and model.config.num_labels == 3
    p = predict_proba(["@united great flight", "worst delay ever", "ok"], model, tokenizer)
    assert p.shape == (3, 3)
    assert abs(p.sum(axis=1) - 1).max() < 1e-6
