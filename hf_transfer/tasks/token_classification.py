"""Token classification (NER, POS): a tag for every word of a pre-split sentence.

Data: CoNLL-style files (`task.data.format=conll`) or any dataset with a token-list and a
tag-list column. Words are split into sub-tokens; the first sub-token of a word carries its
tag and the rest are ignored by the loss (or, with `label_all_subtokens`, they carry the
inside version of it). Evaluation always scores words (their first sub-token), whatever the
training labels, as the tag scheme says (`task.tag_scheme`, detected from the train tags by
default): entity tags (bio / iob2, bioes, io) get entity-level precision / recall / F1 with
seqeval's semantics, overall and per entity type, and token accuracy; plain tags (none: POS)
get token accuracy, macro F1 over tags and per-tag scores.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from hf_transfer.data import DatasetConfig, list_class_label, require_columns
from hf_transfer.errors import UserError
from hf_transfer.extra_sets import ExtraTestConfig, check_sets, column_key, label_names_of, set_columns, split_name
from hf_transfer.metrics import entity_scores, tag_scores
from hf_transfer.models import ensure_prefix_space
from hf_transfer.tasks.base import (
    Baseline,
    Encoded,
    MetricFunctions,
    PipelinePredictor,
    Task,
    TaskData,
    check_metric,
    label_config,
    labelled_cross_entropy,
    load_pipeline,
    recorded_max_length,
    trust_remote_code,
)

# Imported inside the functions that use them, not here: torch, transformers and datasets. This module
# is on the path of --help and of a config error, which stay quick (tests/test_architecture.py).

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

log = logging.getLogger(__name__)

ENTITY_METRICS = ("f1", "precision", "recall", "accuracy", "loss")
TAG_METRICS = ("accuracy", "f1_macro", "loss")  # scheme none: no entities to score
IGNORED = -100  # a position with no label
TagScheme = Literal["bio", "iob2", "bioes", "io", "none"]
# The X of the X-TYPE tags each entity scheme reads (bio and iob2: two names, one scoring).
SCHEME_PREFIXES = {"bio": "BI", "iob2": "BI", "bioes": "BIES", "io": "I"}


@dataclass
class Columns:
    tokens: str = "tokens"
    tags: str = "tags"


@dataclass
class TokenClassificationConfig:
    type: Literal["token_classification"]
    data: DatasetConfig
    name: str | None = None
    columns: Columns = field(default_factory=Columns)
    # Tag names in id order; by default the tags found in train, "O" first.
    labels: list[str] | None = None
    # Label every sub-token of a word (B-X becomes I-X after the first), not just the first.
    label_all_subtokens: bool = False
    max_length: int | None = None
    # bio | iob2 | bioes | io: entity tags, scored per entity; none: plain tags (POS), scored per
    # tag. null: detected from the train tags (see detect_tag_scheme); a given scheme the tags
    # contradict is refused.
    tag_scheme: TagScheme | None = None
    # null: f1 for entity schemes, accuracy for none.
    metric_for_best_model: str | None = None
    # More tagged sets scored after training like the test split, by name (see extra_sets.py).
    extra_test: dict[str, ExtraTestConfig] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_sets(self.extra_test, Columns)
        for name, extra in self.extra_test.items():
            for key in ("drop_labels", "numeric_labels"):
                if getattr(extra, key) is not None:  # a sentence's tags are all scored or none is
                    raise ValueError(f"key 'task.extra_test.{name}.{key}' applies to classification, not to tags")


class TokenClassification(Task):
    Config = TokenClassificationConfig
    auto_model = "AutoModelForTokenClassification"
    pipeline_task = "token-classification"
    peft_task_type = "TOKEN_CLS"
    # A new tag head learns the rare tags late: WNUT-16 tweets (1,914 sentences, full, rate 1e-4,
    # batch 32) reach test entity F1 0 after 60 steps, 0.25 after 180, 0.51 after 360 and 0.53
    # after 600 (BENCHMARKS.md, "Token classification at the defaults").
    least_steps = 400

    def __init__(self, config: TokenClassificationConfig, seed: int):
        super().__init__(config, seed)
        if config.metric_for_best_model is not None:
            # A typo fails now; whether the metric fits the scheme, once the scheme is known.
            check_metric(config.metric_for_best_model, list(dict.fromkeys(ENTITY_METRICS + TAG_METRICS)))
            if config.tag_scheme is not None:
                self._check_best_metric(config.tag_scheme)

    # -- data ---------------------------------------------------------------------------
    def prepare(self, raw: DatasetDict) -> TaskData:
        from datasets import ClassLabel, DatasetDict, Features, Sequence, Value

        columns = self.config.columns
        keys = {"task.columns.tokens": columns.tokens, "task.columns.tags": columns.tags}
        tags = {}
        for split, dataset in raw.items():
            keys["task.columns.tags"] = _tags_column(dataset, columns.tags)
            try:
                require_columns(dataset, keys, split)
            except UserError as err:
                if _looks_like_conll(dataset):
                    raise UserError(f"{err}; its lines look like CoNLL (a token and its tag): set "
                                    "task.data.format=conll") from None  # fmt: skip
                raise
            tags[split] = self._tag_names(dataset)
        label_names = self._label_names(tags["train"])
        scheme = self._tag_scheme(tags["train"], label_names)
        if self.config.tag_scheme is None and scheme == "none":
            _refuse_stray_tags(tags["train"], raw["train"][columns.tokens])
        ids = {name: i for i, name in enumerate(label_names)}
        features = Features({"tokens": Sequence(Value("string")), "tags": Sequence(ClassLabel(names=label_names))})
        prepared = {}
        for split, dataset in raw.items():
            unknown = sorted({t for sentence in tags[split] for t in sentence} - set(ids))
            if unknown:
                raise UserError(
                    f"the {split} split has tags not seen in train or task.labels: {unknown}; add them to task.labels"
                )
            tokens = dataset[columns.tokens]
            lengths_match = all(len(a) == len(b) for a, b in zip(tokens, tags[split]))
            if not lengths_match:
                raise UserError(
                    f"the {split} split has sentences whose '{columns.tokens}' and '{columns.tags}' lists differ in length"
                )
            from datasets import Dataset

            prepared[split] = Dataset.from_dict(
                {"tokens": tokens, "tags": [[ids[t] for t in sentence] for sentence in tags[split]]}, features=features
            ).filter(lambda row: len(row["tokens"]) > 0, desc=f"Checking {split} sentences")
        log.info("%d tags: %s", len(label_names), ", ".join(label_names))
        return TaskData(DatasetDict(prepared), labels=label_names, scheme=scheme)

    def prepare_extra(self, raw: Dataset, name: str, extra: ExtraTestConfig, data: TaskData) -> Dataset:
        """An extra tagged set in the task's columns, its tags mapped to the task's by name."""

        from datasets import ClassLabel, Dataset, Features, Sequence, Value

        columns = set_columns(extra, self.config.columns)
        split = split_name(name)
        require_columns(raw, {column_key(name, extra, "tokens"): columns.tokens}, split)
        require_columns(raw, {column_key(name, extra, "tags"): _tags_column(raw, columns.tags)}, split)
        reader = copy.copy(self)
        reader.config = dataclasses.replace(self.config, columns=columns)
        tags = reader._tag_names(raw)
        every = [t for sentence in tags for t in sentence]
        mapped = dict(zip(every, label_names_of(every, name, extra, data.labels, None, unit="tags")[1]))
        tokens = raw[columns.tokens]
        if not all(len(a) == len(b) for a, b in zip(tokens, tags)):
            raise UserError(
                f"the {split} split has sentences whose '{columns.tokens}' and '{columns.tags}' lists differ in length"
            )
        ids = {label: i for i, label in enumerate(data.labels)}
        features = Features({"tokens": Sequence(Value("string")), "tags": Sequence(ClassLabel(names=data.labels))})
        return Dataset.from_dict(
            {"tokens": tokens, "tags": [[ids[mapped[t]] for t in sentence] for sentence in tags]}, features=features
        ).filter(lambda row: len(row["tokens"]) > 0, desc=f"Checking {split} sentences")

    def _tag_names(self, dataset: Dataset) -> list[list[str]]:
        column = _tags_column(dataset, self.config.columns.tags)
        inner = list_class_label(dataset.features[column])
        values = dataset[column]
        if inner is not None:
            return [[inner.int2str(t) for t in sentence] for sentence in values]
        return [[str(t) for t in sentence] for sentence in values]

    def _label_names(self, train_tags: list[list[str]]) -> list[str]:
        found = {t for sentence in train_tags for t in sentence}
        if self.config.labels is not None:
            missing = sorted(found - set(self.config.labels))
            if missing:
                raise UserError(f"tags {missing} occur in the train split but are not in task.labels")
            return list(self.config.labels)
        # O first, then each entity type's B- before its I- (a stable, readable order).
        return sorted(found, key=lambda t: (t != "O", t[2:] if t[1:2] == "-" else t, t))

    def _tag_scheme(self, train_tags: list[list[str]], label_names: list[str]) -> str:
        """The scheme given, checked against the tags, or the one they show; logged with why."""
        counts = Counter(t for sentence in train_tags for t in sentence)
        tags = sorted(label_names, key=lambda t: -counts[t])  # most frequent first: the examples
        given = self.config.tag_scheme
        if given is None:
            scheme, why = detect_tag_scheme(tags)
            why = f"detected: {why}"
        else:
            _refuse_misfits(given, tags)
            scheme, why = given, "task.tag_scheme"
        log.info("tag scheme: %s (%s); scored per %s", scheme, why, "tag" if scheme == "none" else "entity")
        if self.config.metric_for_best_model is not None:
            self._check_best_metric(scheme)
        return scheme

    def _check_best_metric(self, scheme: str) -> None:
        """Refuse a task.metric_for_best_model the scheme does not score (f1 under none)."""
        try:
            check_metric(self.config.metric_for_best_model, list(_metrics_of(scheme)))
        except UserError as err:
            raise UserError(f"{err} (under tag scheme {scheme})") from None

    # -- model ---------------------------------------------------------------------------
    def model_config_kwargs(self, data: TaskData) -> dict[str, Any]:
        return label_config(data.labels)

    def adapt_tokenizer(self, tokenizer: Any, family: str) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise UserError("token classification needs a fast tokenizer (to map sub-tokens back to words)")
        ensure_prefix_space(tokenizer)

    # -- preprocessing -------------------------------------------------------------------
    def tokenize(self, data: TaskData, tokenizer: Any, max_length: int) -> Encoded:
        from datasets import DatasetDict

        inside = _inside_tags(data.labels, data.scheme)

        def encode(batch: dict[str, list[Any]], all_subtokens: bool) -> Any:
            encoded = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True, max_length=max_length)
            encoded["word_ids"] = [encoded.word_ids(i) for i in range(len(batch["tokens"]))]
            encoded["labels"] = [
                self._align(word_ids, tags, all_subtokens, inside)
                for word_ids, tags in zip(encoded["word_ids"], batch["tags"])
            ]
            return encoded

        tokenized, words = {}, {}
        for name, split in data.splits.items():
            all_subtokens = self.config.label_all_subtokens and name == "train"
            features = split.map(encode, batched=True, fn_kwargs={"all_subtokens": all_subtokens},
                                 remove_columns=split.column_names, desc=f"Tokenizing {name}")  # fmt: skip
            if name != "train":  # kept to read the predictions back per word
                words[name] = Words(features["word_ids"], [len(tokens) for tokens in split["tokens"]])
            tokenized[name] = features.remove_columns("word_ids")
        return Encoded(DatasetDict(tokenized), decoding=words)

    @staticmethod
    def _align(word_ids: list[int | None], tags: list[int], all_subtokens: bool, inside: dict[int, int]) -> list[int]:
        labels, previous = [], None
        for word in word_ids:
            if word is None:
                labels.append(IGNORED)
            elif word != previous:
                labels.append(tags[word])
            else:
                labels.append(inside.get(tags[word], tags[word]) if all_subtokens else IGNORED)
            previous = word
        return labels

    def loss_function(self, data: TaskData, label_smoothing: float = 0.0) -> Any:
        return TokenCrossEntropy(label_smoothing)

    def collator(self, tokenizer: Any, pad_to_multiple_of: int | None = None) -> Any:
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=pad_to_multiple_of)

    # -- training and evaluation ---------------------------------------------------------
    @property
    def best_metric(self) -> tuple[str, bool]:
        # Before the tags are read (TrainingArguments are built first), an undetected scheme
        # counts as an entity one; best_metric_for gives the choice once the data is loaded.
        return self._best_metric(self.config.tag_scheme)

    def best_metric_for(self, data: TaskData) -> tuple[str, bool]:
        return self._best_metric(data.scheme)

    def _best_metric(self, scheme: str | None) -> tuple[str, bool]:
        name = self.config.metric_for_best_model or ("accuracy" if scheme == "none" else "f1")
        return name, name != "loss"

    def metric_functions(self, data: TaskData, encoded: Encoded) -> MetricFunctions:
        def compute_metrics(eval_prediction: Any) -> dict[str, float]:
            predicted, actual = _tag_sequences(eval_prediction.predictions, eval_prediction.label_ids, data.labels)
            scores = _scores(predicted, actual, data.scheme)
            return {name: value for name, value in scores.items() if not isinstance(value, dict)}  # no per-class

        return compute_metrics, None

    def evaluate(
        self, prediction: Any, split: str, data: TaskData, encoded: Encoded
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        # Scored per word against every word's tag: a word cut off by max_length counts as
        # predicted "O" (left out, it would flatter the scores); as no tag under scheme none,
        # where "O" may be no tag at all.
        examples = data.splits[split]
        missing = None if data.scheme == "none" else "O"
        predicted = encoded.decoding[split].tags(prediction.predictions, data.labels, missing)
        actual = [[data.labels[t] for t in row["tags"]] for row in examples]
        results = dict(prediction.metrics or {})
        results.update(_scores(predicted, actual, data.scheme))
        results["tag_scheme"] = data.scheme
        results["num_examples"] = len(examples)
        records = [
            {"tokens": row["tokens"], "tags": tags, "predicted": guess}
            for row, tags, guess in zip(examples, actual, predicted)
        ]
        return results, records

    def baseline(self, data: TaskData) -> Baseline | None:
        counts = Counter(t for row in data.splits["train"]["tags"] for t in row)
        if not counts:
            return None
        commonest = data.labels[counts.most_common(1)[0][0]]
        scores = {}
        for split, examples in data.splits.items():
            if split == "train" or "tags" not in examples.column_names or not len(examples):
                continue
            actual = [[data.labels[t] for t in row] for row in examples["tags"]]
            scores[split] = _scores([[commonest] * len(row) for row in actual], actual, data.scheme)
        return Baseline(f"every word tagged '{commonest}', the commonest tag", scores)

    def usage_snippet(self, model_ref: str, custom_code: bool = False) -> str:
        return (
            "from transformers import pipeline\n\n"
            f'ner = pipeline("token-classification", model="{model_ref}", aggregation_strategy="simple"'
            f"{trust_remote_code(custom_code)})\n"
            'print(ner("Hugging Face is based in New York City"))\n'
        )

    # -- prediction with a trained model -------------------------------------------------
    @classmethod
    def prediction_settings(cls, task_config: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
        recorded = [metrics.get(split) for split in ("test", "validation") if isinstance(metrics.get(split), dict)]
        scheme = next((r["tag_scheme"] for r in recorded if r.get("tag_scheme")), task_config.get("tag_scheme"))
        return {"tag_scheme": scheme, **recorded_max_length(metrics)}

    @classmethod
    def predictor(cls, model: str, settings: dict[str, Any], revision: str | None, device: str | None) -> Any:
        pipe = load_pipeline(cls.pipeline_task, model, revision, device)
        if settings.get("tag_scheme") == "none":  # plain tags (POS) name no entities: a tag per word
            return TagPredictor(settings, pipe)
        return EntityPredictor(settings, pipe)


class EntityPredictor(PipelinePredictor):
    """{"entities": [{"entity_group", "word", "start", "end", "score"}]} per text."""

    long_texts = "read in overlapping windows of {max_length} tokens"

    def run(self, chunk: list[dict[str, Any]], batch_size: int) -> list[dict[str, Any]]:
        texts = [r["text"] for r in chunk]
        self.count_cut(texts)
        # A text longer than max_length is read in overlapping windows (the pipeline's stride),
        # whose entities are joined: none is lost past the limit.
        outputs = self.pipe(texts, batch_size=batch_size, aggregation_strategy="simple", stride=self.max_length // 4)
        if texts and not isinstance(outputs[0], list):  # one text in, one list of entities out
            outputs = [outputs]
        return [{"entities": [_entity(e) for e in entities]} for entities in outputs]


class TagPredictor(PipelinePredictor):
    """{"tokens": [...], "tags": [...]}: the text split into words at spaces, as the run's
    words were, and each word's tag from its first sub-token, as the run scored them."""

    long_texts = "tagged in windows of {max_length} tokens"

    def run(self, chunk: list[dict[str, Any]], batch_size: int) -> list[dict[str, Any]]:
        import torch

        model, tokenizer = self.pipe.model, self.pipe.tokenizer
        words = [r["text"].split() for r in chunk]
        # A text longer than max_length is tagged in consecutive windows of whole words.
        windows = [(i, piece) for i, tokens in enumerate(words) for piece in self._windows(tokens)]
        tags: list[list[str | None]] = [[] for _ in words]
        for start in range(0, len(windows), batch_size):
            batch = windows[start : start + batch_size]
            encoded = tokenizer([piece for _, piece in batch], is_split_into_words=True, truncation=True,
                                padding=True, return_tensors="pt")  # fmt: skip
            inputs = {k: v.to(model.device) for k, v in encoded.items() if k in tokenizer.model_input_names}
            with torch.no_grad():
                predicted = model(**inputs).logits.argmax(-1).cpu()
            for row, (text, piece) in enumerate(batch):
                first = {}
                for position, word in enumerate(encoded.word_ids(row)):
                    if word is not None and word not in first:
                        first[word] = model.config.id2label[int(predicted[row, position])]
                tags[text] += [first.get(w) for w in range(len(piece))]
        return [{"tokens": tokens, "tags": tags[i]} for i, tokens in enumerate(words)]

    def _windows(self, words: list[str]) -> list[list[str]]:
        """`words` in consecutive runs that each fit max_length tokens (with the special tokens)."""
        if not words:
            return [words]
        room = self.max_length - self.pipe.tokenizer.num_special_tokens_to_add()
        counts = [len(ids) or 1 for ids in self.pipe.tokenizer(words, add_special_tokens=False)["input_ids"]]
        if sum(counts) <= room:
            return [words]
        self.cut += 1
        windows, current, used = [], [], 0
        for word, count in zip(words, counts):
            if current and used + count > room:
                windows.append(current)
                current, used = [], 0
            current.append(word)
            used += count
        return windows + [current]


def _entity(entity: dict[str, Any]) -> dict[str, Any]:
    return {
        "entity_group": entity["entity_group"],
        "word": entity["word"],
        "start": int(entity["start"]),
        "end": int(entity["end"]),
        "score": round(float(entity["score"]), 6),
    }


def _scores(predicted: list[list[Any]], actual: list[list[str]], scheme: str | None) -> dict[str, Any]:
    """Per entity under an entity scheme; per tag under none (its tags name no entities)."""
    return tag_scores(predicted, actual) if scheme == "none" else entity_scores(predicted, actual)


@dataclass
class Words:
    """How an evaluated split's tokens map to its words: each example's word index per token,
    and its word count (max_length may have cut words off)."""

    word_ids: list[list[int | None]]
    counts: list[int]

    def tags(self, logits: np.ndarray, label_names: list[str], missing: str | None = "O") -> list[list[str | None]]:
        """Each example's predicted tag per word, from its first sub-token; `missing` for the
        words max_length cut off."""
        tags = []
        for word_ids, predicted, count in zip(self.word_ids, logits.argmax(axis=-1), self.counts):
            words = {}
            for position, word in enumerate(word_ids):
                if word is not None and word not in words:
                    words[word] = label_names[predicted[position]]
            tags.append([words.get(i, missing) for i in range(count)])
        return tags


def detect_tag_scheme(tags: list[str]) -> tuple[str, str]:
    """(scheme, why) of a tag set (most frequent first: the first misfits are the examples).

    The rule: when every tag is O or X-TYPE with X one of B, I, E, S, the tags mark entities:
    bioes if any E- or S- occurs, else iob2 if any B- occurs (or no prefix at all: only O),
    else io (I- only). Any other tag (NN, VBD, BE: part-of-speech tags; BE is no B-E) makes
    them plain tags: none, each tag a class of its own.
    """
    misfits = _misfits(tags, "bioes")
    if misfits:
        examples = ", ".join(misfits[:3])
        return "none", f"{len(tags)} tags, {len(misfits)} not O or B-/I-/E-/S-TYPE, e.g. {examples}"
    prefixes = {_prefix(t) for t in tags}
    if prefixes & {"E", "S"}:
        return "bioes", "every tag is O or B-/I-/E-/S-TYPE, with E- or S- among them"
    if "B" in prefixes or "I" not in prefixes:
        return "iob2", "every tag is O or B-/I-TYPE"
    return "io", "every tag is O or I-TYPE"


def _tags_column(dataset: Any, configured: str) -> str:
    """task.columns.tags: a column name, or a CoNLL file's field number (1-based: `3` is the
    third field of each line, read into column_3)."""
    if str(configured).isdigit() and f"column_{configured}" in dataset.column_names:
        return f"column_{configured}"
    return configured


def _looks_like_conll(dataset: Any) -> bool:
    """A table read as plain text whose lines are `token TAG` (or more columns): CoNLL."""
    if dataset.column_names != ["text"] or not len(dataset):
        return False
    lines = [line for line in dataset[: min(len(dataset), 200)]["text"] if line and line.strip()]
    return bool(lines) and sum(len(line.split()) >= 2 for line in lines) >= 0.9 * len(lines)


# Below this share of the tag occurrences, tags that fit no entity scheme among entity tags are
# mistakes in the file (a line missing its tab), not a sign of plain tags.
STRAY_SHARE = 0.01


def _refuse_stray_tags(sentences: list[list[str]], tokens: list[list[str]]) -> None:
    """Entity tags with a rare tag that fits no scheme (`XO` from a line that lost its tab)
    would switch the whole run to plain tags, scored without entities: refused instead, naming
    the tag, where it first is, and the fix."""
    counts = Counter(t for sentence in sentences for t in sentence)
    stray = {t: n for t, n in counts.items() if _prefix(t) is None}
    entity = any(_prefix(t) in ("B", "I", "E", "S") for t in counts)
    if not stray or not entity or sum(stray.values()) > STRAY_SHARE * sum(counts.values()):
        return
    tag = min(stray, key=lambda t: stray[t])
    row, position = next((r, sentence.index(tag)) for r, sentence in enumerate(sentences) if tag in sentence)
    word = tokens[row][position] if row < len(tokens) and position < len(tokens[row]) else "?"
    rest = sorted(set(stray) - {tag})
    others = f" (and {len(rest)} more such tags: {', '.join(rest[:5])})" if rest else ""
    raise UserError(
        f"tag {tag!r} ({stray[tag]} time{'s' if stray[tag] > 1 else ''}; first on the word {word!r}, word "
        f"{position + 1} of train sentence {row + 1}) fits none of the entity schemes the other tags follow"
        f"{others}: it looks like a damaged line (a missing tab?); fix it, or set task.tag_scheme=none to score "
        "every tag as a plain tag"
    )


def _prefix(tag: str) -> str | None:
    """ "O" for O, X for an X-TYPE tag with X one of B, I, E, S ("B" for B-geo-loc), else None."""
    if tag == "O":
        return "O"
    head, dash, kind = tag.partition("-")
    return head if dash and kind and head in ("B", "I", "E", "S") else None


def _misfits(tags: list[str], scheme: str) -> list[str]:
    """The tags an entity scheme cannot read: neither O nor X-TYPE with one of its prefixes X."""
    allowed = {"O", *SCHEME_PREFIXES[scheme]}
    return [t for t in tags if _prefix(t) not in allowed]


def _refuse_misfits(scheme: str, tags: list[str]) -> None:
    misfits = _misfits(tags, scheme) if scheme != "none" else []  # none reads any tag
    if misfits:
        form = "/".join(f"{p}-" for p in SCHEME_PREFIXES[scheme]) + "TYPE"
        raise UserError(
            f"task.tag_scheme={scheme} does not fit the train tags: {len(misfits)} of {len(tags)} are not O or "
            f"{form} (e.g. {', '.join(misfits[:3])}); set task.tag_scheme=none to score plain tags (POS) per tag, "
            "or leave it null to detect the scheme"
        )


def _metrics_of(scheme: str) -> tuple[str, ...]:
    return TAG_METRICS if scheme == "none" else ENTITY_METRICS


def _inside_tags(label_names: list[str], scheme: str | None = None) -> dict[int, int]:
    """The id of I-X for the id of each B-X (for sub-tokens after a word's first); none under
    scheme none, where a word's later sub-tokens repeat its tag as it is."""
    if scheme == "none":
        return {}
    ids = {name: i for i, name in enumerate(label_names)}
    return {i: ids.get("I-" + name[2:], i) for i, name in enumerate(label_names) if name.startswith("B-")}


def _tag_sequences(
    logits: np.ndarray, labels: np.ndarray, label_names: list[str]
) -> tuple[list[list[str]], list[list[str]]]:
    """Predicted and gold tags of the labelled positions (each word's first sub-token)."""
    predicted, actual = [], []
    for prediction, label in zip(logits.argmax(axis=-1), labels):
        keep = label != IGNORED
        predicted.append([label_names[i] for i in prediction[keep]])
        actual.append([label_names[i] for i in label[keep]])
    return predicted, actual


class TokenCrossEntropy:
    """Cross-entropy over the labelled tokens as a share of the whole step's (every token weighs
    the same, however the step is split). The models' own loss is a mean per batch, which weighs
    the tokens of a short batch more (and differs between one process and several)."""

    def __init__(self, label_smoothing: float = 0.0):
        self.smoothing = label_smoothing

    def __call__(self, outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        return labelled_cross_entropy(logits, labels, num_items_in_batch, self.smoothing)
