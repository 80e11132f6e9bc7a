from driftloop.data import AIRLINE_TOPIC, load_demo_dataset, topic_counts, topic_of
from driftloop.settings import LABELS


def test_demo_corpus_has_airline_domain_and_three_other_topics(demo_rows) -> None:
    counts = {c.topic: c for c in topic_counts(demo_rows)}
    assert counts[AIRLINE_TOPIC].rows > 14_000
    others = [c for t, c in counts.items() if t != AIRLINE_TOPIC and c.rows >= 1_000]
    assert len(others) >= 3
    for c in [counts[AIRLINE_TOPIC], *others]:
        assert set(c.by_label) == set(LABELS)
        assert sum(c.by_label.values()) == c.rows
    assert sum(c.rows for c in counts.values()) == len(demo_rows) > 37_000


def test_airline_rows_carry_the_airline_segment(demo_rows) -> None:
    airline = [r for r in demo_rows if r["topic"] == AIRLINE_TOPIC]
    assert all(r["airline"] for r in airline)
    assert {r["airline"] for r in airline} >= {"united", "us_airways", "american", "southwest"}
    assert all(r["airline"] is None for r in demo_rows if r["topic"] != AIRLINE_TOPIC)


def test_topic_rules() -> None:
    assert topic_of("@united lost my bag again") == AIRLINE_TOPIC
    assert topic_of("self-driving cars are the future") == "self_driving_cars"
    assert topic_of("#DeflateGate is silly") == "deflategate"


def test_dataset_has_class_labels() -> None:
    ds = load_demo_dataset()
    assert ds.features["label"].names == list(LABELS)
    assert set(ds.column_names) >= {"text", "label", "topic", "airline"}
    assert len(ds) > 37_000
