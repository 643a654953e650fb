"""Our numpy metrics against the field's libraries (scikit-learn, scipy, seqeval), on generated inputs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics as skm
from hypothesis import given, settings
from hypothesis import strategies as st
from seqeval import metrics as seqeval
from seqeval.metrics.sequence_labeling import get_entities

from hf_transfer.metrics import (
    classification_scores,
    entities,
    entity_scores,
    multi_label_scores,
    per_class_scores,
    regression_scores,
    tag_scores,
)

EXAMPLES = settings(max_examples=150, deadline=None)


def approx(value):
    return pytest.approx(value, abs=1e-9)


# -- single-label classification ---------------------------------------------------------------
@st.composite
def label_pairs(draw, min_size=1):
    """(predictions, references, num_labels), some classes often absent from one side or both."""
    num_labels = draw(st.integers(1, 6))
    size = draw(st.integers(min_size, 40))
    labels = st.lists(st.integers(0, num_labels - 1), min_size=size, max_size=size)
    return np.array(draw(labels)), np.array(draw(labels)), num_labels


@EXAMPLES
@given(label_pairs())
def test_classification_scores_match_sklearn(pair):
    predictions, references, num_labels = pair
    ours = classification_scores(predictions, references, num_labels)
    # Ours averages over the classes seen on either side; sklearn's labels= says the same.
    present = sorted(set(predictions) | set(references))
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        references, predictions, labels=present, average="macro", zero_division=0
    )
    assert ours["accuracy"] == approx(skm.accuracy_score(references, predictions))
    assert ours["precision_macro"] == approx(precision)
    assert ours["recall_macro"] == approx(recall)
    assert ours["f1_macro"] == approx(f1)


@EXAMPLES
@given(label_pairs())
def test_per_class_scores_match_sklearn(pair):
    predictions, references, num_labels = pair
    names = [f"class{i}" for i in range(num_labels)]
    ours = per_class_scores(predictions, references, names)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        references, predictions, labels=list(range(num_labels)), average=None, zero_division=0
    )
    assert list(ours) == names
    for i, name in enumerate(names):
        assert ours[name]["precision"] == approx(precision[i])
        assert ours[name]["recall"] == approx(recall[i])
        assert ours[name]["f1"] == approx(f1[i])
        assert ours[name]["support"] == support[i]
        assert ours[name]["predicted"] == int((predictions == i).sum())


def test_classification_scores_of_nothing_are_zero():
    empty = np.array([], dtype=int)
    assert classification_scores(empty, empty, 3) == {
        "accuracy": 0.0,
        "f1_macro": 0.0,
        "precision_macro": 0.0,
        "recall_macro": 0.0,
    }


# -- multi-label classification ----------------------------------------------------------------
@st.composite
def multi_hot_pairs(draw):
    """(predicted, actual) boolean matrices; sparse enough that some labels are never used."""
    # Two labels at least: sklearn reads a one-column matrix as binary, not as multi-label.
    rows, columns = draw(st.integers(1, 25)), draw(st.integers(2, 6))
    density = draw(st.sampled_from([0.1, 0.3, 0.6]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng.random((rows, columns)) < density, rng.random((rows, columns)) < density


@EXAMPLES
@given(multi_hot_pairs())
def test_multi_label_scores_match_sklearn(pair):
    predicted, actual = pair
    names = [f"label{i}" for i in range(predicted.shape[1])]
    ours = multi_label_scores(predicted.astype(int), actual.astype(int), names)
    assert ours["f1_micro"] == approx(skm.f1_score(actual, predicted, average="micro", zero_division=0))
    assert ours["subset_accuracy"] == approx(skm.accuracy_score(actual, predicted))
    # Ours skips, in macro F1, labels neither predicted nor true; sklearn's labels= says the same.
    used = [i for i in range(predicted.shape[1]) if predicted[:, i].any() or actual[:, i].any()]
    expected_macro = skm.f1_score(actual, predicted, labels=used, average="macro", zero_division=0) if used else 0.0
    assert ours["f1_macro"] == approx(expected_macro)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        actual, predicted, average=None, zero_division=0
    )
    for i, name in enumerate(names):
        row = ours["per_class"][name]
        assert (row["precision"], row["recall"], row["f1"]) == approx((precision[i], recall[i], f1[i]))
        assert row["support"] == support[i]


# -- regression -------------------------------------------------------------------------------
# Values on a coarse grid: frequent ties, and no ill-conditioned near-constant inputs where two
# correct float algorithms may disagree beyond 1e-9.
grid_values = st.integers(-40, 40).map(lambda v: v / 4)


@st.composite
def value_pairs(draw):
    size = draw(st.integers(2, 40))
    values = st.lists(grid_values, min_size=size, max_size=size)
    return np.array(draw(values)), np.array(draw(values))


def is_constant(values):
    return bool(np.all(values == values[0]))


@EXAMPLES
@given(value_pairs())
def test_regression_scores_match_sklearn_and_scipy(pair):
    predictions, references = pair
    ours = regression_scores(predictions, references)
    assert ours["mse"] == approx(skm.mean_squared_error(references, predictions))
    assert ours["mae"] == approx(skm.mean_absolute_error(references, predictions))
    if is_constant(predictions) or is_constant(references):
        return  # scipy says nan here; the constant case has its own test below
    assert ours["pearson"] == approx(scipy.stats.pearsonr(predictions, references).statistic)
    assert ours["spearman"] == approx(scipy.stats.spearmanr(predictions, references).statistic)


@EXAMPLES
@given(
    st.integers(2, 40).flatmap(lambda n: st.tuples(st.just(n), st.lists(grid_values, min_size=n, max_size=n))),
    st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False),
    st.booleans(),
)
def test_correlation_with_a_constant_is_zero(sized_values, constant, constant_first):
    # Correlation with a constant is undefined (scipy: nan); ours reports 0.0, not a nan in the logs.
    size, values = sized_values
    flat, other = np.full(size, constant), np.array(values)
    pair = (flat, other) if constant_first else (other, flat)
    ours = regression_scores(*pair)
    assert ours["pearson"] == 0.0
    assert ours["spearman"] == 0.0


# -- entities (seqeval, default conlleval-compatible mode) --------------------------------------
TYPES = ["PER", "LOC", "ORG"]
# BIO / IOB2 and BIOES tags of a few types, plus bare prefixes (seqeval's "_" type); any order,
# so ill-formed sequences (I- after O, I-X after B-Y, E- without B-) come up often.
TAGS = ["O"] + [f"{prefix}-{kind}" for prefix in "BIES" for kind in TYPES] + list("BIES")
BIO_TAGS = ["O"] + [f"{prefix}-{kind}" for prefix in "BI" for kind in TYPES]
tag_sequences = st.sampled_from([TAGS, BIO_TAGS]).flatmap(lambda tags: st.lists(st.sampled_from(tags), max_size=15))


@st.composite
def tagged_corpora(draw):
    """(predicted, actual): sentences of equal length, predictions often a noisy copy of the truth."""
    actual = draw(st.lists(tag_sequences, min_size=1, max_size=6))
    predicted = []
    for sentence in actual:
        noise = draw(st.lists(st.sampled_from(TAGS), min_size=len(sentence), max_size=len(sentence)))
        keep = draw(st.lists(st.booleans(), min_size=len(sentence), max_size=len(sentence)))
        predicted.append([gold if kept else noisy for gold, kept, noisy in zip(sentence, keep, noise)])
    return predicted, actual


@settings(max_examples=300, deadline=None)
@given(tag_sequences)
def test_entities_match_seqeval(tags):
    assert entities(tags) == get_entities(tags)


@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:invalid value encountered")  # seqeval, no entities
@EXAMPLES
@given(tagged_corpora())
def test_entity_scores_match_seqeval(corpus):
    predicted, actual = corpus
    ours = entity_scores(predicted, actual)
    assert ours["precision"] == approx(seqeval.precision_score(actual, predicted, zero_division=0))
    assert ours["recall"] == approx(seqeval.recall_score(actual, predicted, zero_division=0))
    assert ours["f1"] == approx(seqeval.f1_score(actual, predicted, zero_division=0))
    report = seqeval.classification_report(actual, predicted, output_dict=True, zero_division=0)
    per_type = {kind: row for kind, row in report.items() if not kind.endswith(" avg")}
    assert sorted(ours["per_type"]) == sorted(per_type)
    for kind, row in per_type.items():
        mine = ours["per_type"][kind]
        assert (mine["precision"], mine["recall"], mine["f1"]) == approx(
            (row["precision"], row["recall"], row["f1-score"])
        )
        assert mine["support"] == row["support"]
    tokens = [(p, g) for pred, gold in zip(predicted, actual) for p, g in zip(pred, gold)]
    expected_accuracy = sum(p == g for p, g in tokens) / len(tokens) if tokens else 0.0
    assert ours["accuracy"] == approx(expected_accuracy)
    if tokens:  # seqeval divides by zero on a corpus of empty sentences
        assert ours["accuracy"] == approx(seqeval.accuracy_score(actual, predicted))


# IO tags (I-X only): a change of type ends an entity, as seqeval reads them.
IO_TAGS = ["O"] + [f"I-{kind}" for kind in TYPES]


@st.composite
def io_corpora(draw):
    sentence = st.lists(st.sampled_from(IO_TAGS), max_size=15)
    actual = draw(st.lists(sentence, min_size=1, max_size=6))
    predicted = [draw(st.lists(st.sampled_from(IO_TAGS), min_size=len(s), max_size=len(s))) for s in actual]
    return predicted, actual


@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:invalid value encountered")  # seqeval, no entities
@EXAMPLES
@given(io_corpora())
def test_entity_scores_of_io_tags_match_seqeval(corpus):
    predicted, actual = corpus
    assert all(entities(tags) == get_entities(tags) for tags in predicted + actual)
    ours = entity_scores(predicted, actual)
    assert ours["f1"] == approx(seqeval.f1_score(actual, predicted, zero_division=0))


# -- plain per-token tags (POS) ---------------------------------------------------------------
POS_TAGS = ["NN", "VBD", "BE", "BED", "AT", "JJ", "IN"]


@st.composite
def pos_corpora(draw):
    """(predicted, actual) sentences of POS tags, a few tags often absent from one side or both."""
    tags = draw(st.lists(st.sampled_from(POS_TAGS), min_size=1, max_size=len(POS_TAGS), unique=True))
    sentence = st.lists(st.sampled_from(tags), max_size=12)
    actual = draw(st.lists(sentence, min_size=1, max_size=6))
    predicted = [draw(st.lists(st.sampled_from(POS_TAGS), min_size=len(s), max_size=len(s))) for s in actual]
    return predicted, actual


@EXAMPLES
@given(pos_corpora())
def test_tag_scores_match_sklearn(corpus):
    predicted, actual = corpus
    ours = tag_scores(predicted, actual)
    flat_predicted = [t for sentence in predicted for t in sentence]
    flat_actual = [t for sentence in actual for t in sentence]
    # Scored: the tags seen on either side, as sklearn's labels= says.
    present = sorted(set(flat_predicted) | set(flat_actual))
    assert list(ours["per_tag"]) == present
    if not present:  # a corpus of empty sentences: sklearn has nothing to score
        assert ours == {"accuracy": 0.0, "f1_macro": 0.0, "per_tag": {}}
        return
    assert ours["accuracy"] == approx(skm.accuracy_score(flat_actual, flat_predicted))
    f1_macro = skm.f1_score(flat_actual, flat_predicted, labels=present, average="macro", zero_division=0)
    assert ours["f1_macro"] == approx(f1_macro)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        flat_actual, flat_predicted, labels=present, average=None, zero_division=0
    )
    for i, tag in enumerate(present):
        row = ours["per_tag"][tag]
        assert (row["precision"], row["recall"], row["f1"]) == approx((precision[i], recall[i], f1[i]))
        assert row["support"] == support[i]


def test_a_word_without_a_prediction_is_wrong_and_no_tag():
    # The third word was cut off by max_length (None): it misses its NN, and predicts no tag.
    scores = tag_scores([["NN", "VBD", None]], [["NN", "VBD", "NN"]])
    assert scores["accuracy"] == pytest.approx(2 / 3)
    assert list(scores["per_tag"]) == ["NN", "VBD"]
    assert scores["per_tag"]["NN"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2,
                                       "predicted": 1}  # fmt: skip
