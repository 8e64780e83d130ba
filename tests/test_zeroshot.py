import numpy as np
import pytest

from clapcurate import metrics as metric_functions
from clapcurate import prompts, zeroshot


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_prompts_turn_separators_into_spaces():
    assert prompts.prompts(["car_horn", "cafe/restaurant", "dog"]) == [
        "this is a sound of car horn",
        "this is a sound of cafe restaurant",
        "this is a sound of dog",
    ]
    assert prompts.label_text("  street__music ") == "street music"


def test_classify_picks_most_similar_class():
    rng = np.random.default_rng(0)
    classes = _unit(rng.normal(size=(5, 16)))
    truth = rng.integers(0, 5, size=200)
    audio = _unit(classes[truth] + 0.05 * rng.normal(size=(200, 16)))
    pred = zeroshot.classify(audio, classes)
    assert metric_functions.accuracy(truth, pred) == 1.0
    # a deliberately wrong class set (rolled) gives no correct prediction
    assert metric_functions.accuracy(truth, zeroshot.classify(audio, np.roll(classes, 1, axis=0))) == 0.0


def test_confusion_and_per_class_accuracy():
    y_true = [0, 0, 1, 1, 1, 2]
    y_pred = [0, 1, 1, 1, 0, 0]
    cm = metric_functions.confusion_matrix(y_true, y_pred, 4)
    assert cm.tolist() == [[1, 1, 0, 0], [1, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    per_class = metric_functions.per_class_accuracy(y_true, y_pred, 4)
    assert per_class[:3].tolist() == [0.5, 2 / 3, 0.0]
    assert np.isnan(per_class[3])
    assert metric_functions.accuracy(y_true, y_pred) == pytest.approx(0.5)


def _brute_force_retrieval(audio, text, text_to_audio, k):
    scores = text @ audio.T
    t2a = np.mean([text_to_audio[j] in np.argsort(-scores[j], kind="stable")[:k] for j in range(len(text))])
    a2t = np.mean([
        any(text_to_audio[j] == i for j in np.argsort(-scores[:, i], kind="stable")[:k])
        for i in range(len(audio))
    ])
    return t2a, a2t


def test_retrieval_metrics_match_brute_force():
    rng = np.random.default_rng(1)
    audio = _unit(rng.normal(size=(30, 8)))
    text_to_audio = np.repeat(np.arange(30), 3)  # three captions per clip
    text = _unit(audio[text_to_audio] + 0.8 * rng.normal(size=(90, 8)))
    metrics = metric_functions.retrieval_metrics(audio, text, text_to_audio)
    for k in (1, 5, 10):
        t2a, a2t = _brute_force_retrieval(audio, text, text_to_audio, k)
        assert metrics[f"text_to_audio/R@{k}"] == pytest.approx(t2a)
        assert metrics[f"audio_to_text/R@{k}"] == pytest.approx(a2t)
    assert 0 < metrics["text_to_audio/mAP@10"] <= metrics["text_to_audio/R@10"]


def test_retrieval_metrics_perfect_and_map_of_one_relevant_item():
    audio = np.eye(4)
    text = np.eye(4)
    metrics = metric_functions.retrieval_metrics(audio, text, [0, 1, 2, 3])
    assert all(v == 1.0 for v in metrics.values())
    # caption 0 ranks its clip second: AP = 1/2
    text = np.array([[0.9, 1.0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    metrics = metric_functions.retrieval_metrics(audio, text, [0, 1, 2, 3])
    assert metrics["text_to_audio/mAP@10"] == pytest.approx((0.5 + 1 + 1 + 1) / 4)
    assert metrics["text_to_audio/R@1"] == pytest.approx(0.75)


def test_evaluate_embeddings_reports_per_class_and_predictions():
    labels = ["dog", "rain"]
    classes = np.eye(2)
    audio = np.array([[1.0, 0.0], [0.2, 0.9], [0.9, 0.1]])
    result = zeroshot.evaluate_embeddings(["a", "b", "c"], audio, ["dog", "rain", "rain"], classes, labels)
    assert result.accuracy == pytest.approx(2 / 3)
    assert result.per_class == {"dog": 1.0, "rain": 0.5}
    assert result.predictions["predicted"].tolist() == ["dog", "rain", "dog"]
    assert result.confusion.tolist() == [[1, 0], [1, 1]]
