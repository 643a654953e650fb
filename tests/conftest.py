"""Fixtures: tiny checkpoints of five architectures and small learnable datasets, built here.

Every model is ~100k parameters with a tokenizer trained on the spot, saved to a session
folder, so tests load them through the same `from_pretrained` path as a real checkpoint.
"""

from __future__ import annotations

import atexit
import csv
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

# Before anything imports huggingface_hub: it reads these once, at import.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _session_folder(prefix: str) -> str:
    """A temporary folder for this test session, removed when it ends (package assets and
    caches run to gigabytes: a folder per session would fill a developer's disk)."""
    folder = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


os.environ["HF_HOME"] = _session_folder("hf-transfer-test-home-")
# Package assets are fetched into a temporary cache, unless a developer keeps one between runs.
os.environ["HF_TRANSFER_CACHE"] = os.environ.get("HF_TRANSFER_TEST_CACHE") or _session_folder("hf-transfer-test-cache-")
os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"

import torch  # noqa: E402

torch.set_num_threads(1)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (pyproject.toml): a worker per core the process may use, 4 at most. Every test
    runs on one thread, and each worker holds torch and the tiny checkpoints (about 1 GB)."""
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


ROOT = Path(__file__).resolve().parent.parent
TEST_RECIPES = Path(__file__).resolve().parent / "recipes"

POSITIVE = ["good", "great", "excellent", "wonderful", "love", "superb", "fine", "happy"]
NEGATIVE = ["bad", "awful", "terrible", "boring", "hate", "poor", "dull", "sad"]
FILLER = ["the", "movie", "film", "plot", "was", "really", "acting", "story", "a", "and", "it", "this"]
# Token-classification data: people and places among everyday words.
PEOPLE = ["alice", "bob", "carol", "dave", "erin"]
PLACES = ["paris", "london", "tokyo", "berlin", "madrid"]
WORDS = ["the", "went", "to", "with", "and", "saw", "in", "today", "a", "movie"]
ARCHITECTURES = ["bert", "distilbert", "roberta", "mpnet", "gpt2", "llama"]


def sentence(rng: random.Random, words: list[str]) -> str:
    parts = rng.sample(FILLER, 4) + [rng.choice(words)]
    rng.shuffle(parts)
    return " ".join(parts)


def sentiment_rows(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        rows.append(
            {"review": sentence(rng, POSITIVE if positive else NEGATIVE), "sentiment": "pos" if positive else "neg"}
        )
    return rows


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train.csv / test.csv of a learnable sentiment task; pairs.csv of a pair task."""
    folder = tmp_path_factory.mktemp("data")
    write_csv(folder / "train.csv", sentiment_rows(96, seed=1))
    write_csv(folder / "test.csv", sentiment_rows(32, seed=2))
    rng = random.Random(3)
    pairs = []
    for i in range(96):
        same = i % 2 == 0
        first = rng.choice([POSITIVE, NEGATIVE])
        second = first if same else (NEGATIVE if first is POSITIVE else POSITIVE)
        pairs.append(
            {
                "premise": sentence(rng, first),
                "hypothesis": sentence(rng, second),
                "label": "agree" if same else "disagree",
            }
        )
    write_csv(folder / "pairs.csv", pairs)
    return folder


def corpus() -> list[str]:
    rng = random.Random(0)
    words = POSITIVE + NEGATIVE
    names = PEOPLE + PLACES + WORDS
    return (
        [sentence(rng, words) for _ in range(300)]
        + [" ".join(rng.sample(names, 6)) for _ in range(100)]
        + [" ".join(POSITIVE + NEGATIVE + FILLER + names)]
    )


def wordpiece_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(corpus(), trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tokenizer.decoder = decoders.WordPiece()
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    ).save_pretrained(folder)


def byte_bpe_tokenizer(folder: Path, style: str) -> None:
    """GPT-2 style (no pad token, nothing added), RoBERTa style (<s> A </s>; MPNet's too, without
    token types) or Llama style (<s> A)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = {
        "gpt2": ["<|endoftext|>"],
        "roberta": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        "mpnet": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        "llama": ["<unk>", "<s>", "</s>"],
    }[style]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(
        corpus(),
        trainers.BpeTrainer(
            vocab_size=600, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    if style == "gpt2":
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
        kwargs = {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    elif style in ("roberta", "mpnet"):
        tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
        kwargs = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>",
                  "cls_token": "<s>", "sep_token": "</s>"}  # fmt: skip
    else:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B:1", special_tokens=[("<s>", 1)]
        )
        kwargs = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    if style == "mpnet":  # as MPNetTokenizer: MPNet takes no token type ids
        kwargs["model_input_names"] = ["input_ids", "attention_mask"]
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=64, **kwargs).save_pretrained(folder)


def tiny_config(arch: str, tokenizer) -> object:
    import transformers

    vocab = len(tokenizer)
    common = {"vocab_size": vocab}
    if arch == "bert":
        return transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                                       max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id, **common)  # fmt: skip
    if arch == "distilbert":
        return transformers.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=37, max_position_embeddings=64,
                                             pad_token_id=tokenizer.pad_token_id, **common)  # fmt: skip
    if arch == "roberta":
        return transformers.RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                                          max_position_embeddings=66, pad_token_id=1, bos_token_id=0, eos_token_id=2, **common)  # fmt: skip
    if arch == "mpnet":  # all-mpnet-base-v2's architecture (MPNet computes 32 relative position buckets, whatever the config)
        return transformers.MPNetConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                                        max_position_embeddings=66, relative_attention_num_buckets=32, pad_token_id=1,
                                        bos_token_id=0, eos_token_id=2, **common)  # fmt: skip
    if arch == "gpt2":
        eos = tokenizer.eos_token_id
        return transformers.GPT2Config(
            n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=eos, eos_token_id=eos, **common
        )
    if arch == "llama":
        return transformers.LlamaConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
                                        num_key_value_heads=1, max_position_embeddings=64, bos_token_id=1, eos_token_id=2,
                                        tie_word_embeddings=False, **common)  # fmt: skip
    raise ValueError(arch)


def build_checkpoint(folder: Path, arch: str, head_labels: int | None = None) -> Path:
    """A pretrained-style checkpoint: the base model (or, with head_labels, a classifier)."""
    import transformers
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    if arch in ("bert", "distilbert"):
        wordpiece_tokenizer(folder)
    else:
        byte_bpe_tokenizer(folder, arch)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = tiny_config(arch, tokenizer)
    torch.manual_seed(0)
    if head_labels:
        config.num_labels = head_labels
        model = transformers.AutoModelForSequenceClassification.from_config(config)
    elif arch in ("gpt2", "llama"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    else:
        model = transformers.AutoModel.from_config(config)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {arch: build_checkpoint(root / arch, arch) for arch in ARCHITECTURES}


@pytest.fixture(scope="session")
def bert_with_head(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BERT checkpoint that already has a 2-label classification head."""
    return build_checkpoint(tmp_path_factory.mktemp("bert_head") / "bert", "bert", head_labels=2)


def tiny_overrides(checkpoint: Path, data_dir: Path, *extra: str) -> list[str]:
    """Overrides for a quick run of the test recipe on a tiny checkpoint."""
    return [
        f"--config-dir={TEST_RECIPES}",
        "recipe=tiny",
        f"model.source={checkpoint}",
        f"task.data.source={data_dir}",
        *extra,
    ]


def compose_tiny(checkpoint: Path, data_dir: Path, *extra: str):
    from hf_transfer.compose import compose

    return compose(
        ["recipe=tiny", f"model.source={checkpoint}", f"task.data.source={data_dir}", *extra],
        config_dir=str(TEST_RECIPES),
    )


def run_main(capsys: Any, *argv: str) -> tuple[Any, str, str]:
    """`hf-transfer ARGV` in-process: its exit status, stdout and stderr."""
    from hf_transfer.cli import main

    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")})
    return env
