"""Multi-process training on CPUs (gloo, 2 processes): one run, correct, or refused out loud.

Two processes with half the per-device batch must train exactly what one process trains with
the whole batch: same parameters, same logged loss. The optimizer is plain SGD, whose step
grows with the gradient: a gradient scaled by the world size cannot hide behind AdamW's scale
invariance (nor behind a clipping threshold that every step reaches). Dropout is off and the
data are read in order so that the two runs see the same batches.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TEST_RECIPES, cli_env, compose_tiny, tiny_overrides
from safetensors.torch import load_file

from hf_transfer.errors import UserError
from hf_transfer.run import run

CONFIGS = Path(__file__).resolve().parent.parent / "hf_transfer" / "accelerate_configs"

# Dropout off, data in order, SGD, a global batch of 16 that divides the data.
SAME_BATCHES = [
    "model.config_overrides={hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}",
    "trainer.train_sampling_strategy=sequential", "trainer.optim=sgd", "trainer.max_grad_norm=1.0",
    "trainer.num_train_epochs=2", "trainer.warmup_steps=0", "strategy.learning_rate=0.5", "trainer.logging_steps=1",
    "task.data.validation_fraction=0.16",  # 96 rows: 16 (rounded up) to validate, 80 to train (5 x 16)
    "trainer.load_best_model_at_end=false",  # compare the weights after the last step, not a best one
]  # fmt: skip


# 31 test examples over 2 processes: accelerate pads the last batch with repeats, which the
# evaluation must drop (each example scored once, in order).
ODD_TEST_SPLIT = ["task.data.max_test_samples=31"]


def accelerate_launch(tmp_path, launch_args, argv, timeout=600):
    command = [sys.executable, "-m", "accelerate.commands.launch", *launch_args, "-m", "hf_transfer", *argv]
    return subprocess.run(command, cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=timeout)


def torchrun(tmp_path, argv, processes=2, timeout=600):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "hf_transfer", *argv]  # fmt: skip
    return subprocess.run(command, cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=timeout)


def logged_losses(folder):
    last = max((folder / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    state = last / "trainer_state.json"
    return [entry["loss"] for entry in json.loads(state.read_text())["log_history"] if "loss" in entry]


@pytest.fixture(scope="module")
def two_process_run(checkpoints, data_dir, tmp_path_factory):
    """The test recipe on tiny BERT, trained by two processes of 8 examples each per step,
    launched as a user would: accelerate launch with the shipped CPU config."""
    cwd = tmp_path_factory.mktemp("ddp")
    folder = cwd / "run"
    argv = [*tiny_overrides(checkpoints["bert"], data_dir), *SAME_BATCHES, "trainer.per_device_train_batch_size=8",
            "trainer.report_to=tensorboard", *ODD_TEST_SPLIT, f"hydra.run.dir={folder}"]  # fmt: skip
    done = accelerate_launch(cwd, ["--config_file", str(CONFIGS / "cpu_multi_process.yaml")], argv)
    assert done.returncode == 0, done.stderr[-4000:]
    return cwd, folder, done


def test_two_processes_train_what_one_process_trains(two_process_run, checkpoints, data_dir, tmp_path):
    _, folder, _ = two_process_run
    cfg = compose_tiny(checkpoints["bert"], data_dir, *SAME_BATCHES, *ODD_TEST_SPLIT,
                       "trainer.per_device_train_batch_size=16")  # fmt: skip
    single = run(cfg, output_dir=tmp_path / "single")
    double = json.loads((folder / "metrics.json").read_text())

    assert double["distributed"]["world_size"] == 2 and double["distributed"]["wrapped_as"] == "DistributedDataParallel"
    assert single.metrics["distributed"]["world_size"] == 1
    # The same parameters, and the same (true) loss at every logged step.
    one = load_file(single.folder / "model.safetensors")
    two = load_file(folder / "model.safetensors")
    assert one.keys() == two.keys()
    for name in one:
        assert torch.allclose(one[name], two[name], atol=2e-5), name
    assert logged_losses(folder) == pytest.approx(logged_losses(single.folder), abs=2e-5)
    assert double["train_loss"] == pytest.approx(single.metrics["train_loss"], abs=2e-5)
    # Evaluation counted every example once.
    assert double["test"]["num_examples"] == 31
    for split in ("validation", "test"):
        assert double[split]["num_examples"] == single.metrics[split]["num_examples"]
        assert double[split]["accuracy"] == pytest.approx(single.metrics[split]["accuracy"])
    records = (folder / "predictions_test.jsonl").read_text().splitlines()
    assert [json.loads(r)["text"] for r in records] == [
        json.loads(r)["text"] for r in (single.folder / "predictions_test.jsonl").read_text().splitlines()
    ]


def test_one_run_folder_and_the_second_process_wrote_nothing(two_process_run):
    cwd, folder, done = two_process_run
    assert sorted(p.name for p in cwd.iterdir()) == ["hf_home", "run"]
    assert (folder / ".hydra").is_dir() and (folder / "train.log").exists()
    assert not list(folder.glob("*rank*")) and "hf-transfer-rank-" not in " ".join(str(p) for p in folder.rglob("*"))
    # Logs come from the main process: the end-of-run summary appears once, one TensorBoard file.
    assert (folder / "train.log").read_text().count("run folder") == 1
    assert len(list((folder / "tensorboard").glob("events.out.tfevents.*"))) == 1


def test_a_run_that_expected_more_processes_is_refused(checkpoints, data_dir, tmp_path):
    cfg = compose_tiny(checkpoints["bert"], data_dir, "expected_world_size=2")
    with pytest.raises(UserError, match="asks for 2 processes, but this process belongs to a world of 1"):
        run(cfg, output_dir=tmp_path / "run")


def test_a_launch_without_cpu_processes_is_refused(checkpoints, data_dir, tmp_path):
    """torchrun on a machine without GPUs, not told to use the CPU: refused, not run twice alone."""
    argv = [
        *tiny_overrides(checkpoints["bert"], data_dir),
        "trainer.use_cpu=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    done = torchrun(tmp_path, argv)
    assert done.returncode != 0
    assert done.stderr.count("hf-transfer: error: the launcher (WORLD_SIZE) asks for 2 processes, but this process "
                             "belongs to a world of 1") == 2  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_gradient_accumulation_equals_a_bigger_batch(checkpoints, data_dir, tmp_path):
    whole = run(compose_tiny(checkpoints["bert"], data_dir, *SAME_BATCHES, "trainer.per_device_train_batch_size=16"),
                output_dir=tmp_path / "whole")  # fmt: skip
    halves = run(compose_tiny(checkpoints["bert"], data_dir, *SAME_BATCHES, "trainer.per_device_train_batch_size=8",
                              "trainer.gradient_accumulation_steps=2"), output_dir=tmp_path / "halves")  # fmt: skip
    one, two = load_file(whole.folder / "model.safetensors"), load_file(halves.folder / "model.safetensors")
    for name in one:
        assert torch.allclose(one[name], two[name], atol=2e-5), name
    assert logged_losses(halves.folder) == pytest.approx(logged_losses(whole.folder), abs=2e-5)


@pytest.mark.parametrize("pooling", ["architecture", "mean"])
@pytest.mark.parametrize("strategy", ["head_only", "partial_unfreeze", "lora", "full"])
def test_gradient_checkpointing_with_frozen_layers_and_adapters(checkpoints, data_dir, tmp_path, strategy, pooling):
    from test_strategies import ParameterWatch

    watch = ParameterWatch()
    cfg = compose_tiny(checkpoints["llama"], data_dir, f"strategy={strategy}", "trainer.gradient_checkpointing=true",
                       "trainer.num_train_epochs=1", f"model.pooling={pooling}")  # fmt: skip
    run(cfg, output_dir=tmp_path / "run", callbacks=[watch])
    # Every trainable tensor got gradients through the checkpointed blocks: the adapters and
    # unfrozen blocks too, not only the head above them.
    assert watch.changed == watch.trainable


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_cpu(checkpoints, data_dir, tmp_path, precision):
    from test_strategies import ParameterWatch

    watch = ParameterWatch()
    result = run(compose_tiny(checkpoints["bert"], data_dir, f"trainer.{precision}=true", "trainer.num_train_epochs=1"),
                 output_dir=tmp_path / "run", callbacks=[watch])  # fmt: skip
    assert watch.changed == set(watch.before)  # every weight moved: the steps were not all skipped
    assert result.metrics["test"]["num_examples"] == 32


def test_accelerate_cpu_flag_with_several_processes_is_refused(checkpoints, data_dir, tmp_path):
    argv = [*tiny_overrides(checkpoints["bert"], data_dir), f"hydra.run.dir={tmp_path / 'run'}"]
    done = accelerate_launch(tmp_path, ["--cpu", "--num_processes", "2"], argv)
    assert done.returncode != 0
    assert "hf-transfer: error: accelerate launch --cpu started one process" in done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS.glob("*.yaml")))
def test_accelerate_accepts_the_shipped_configs(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    expected = {"single_gpu": "NO", "multi_gpu": "MULTI_GPU", "cpu_multi_process": "MULTI_GPU", "fsdp": "FSDP",
                "deepspeed_zero2": "DEEPSPEED", "deepspeed_zero3": "DEEPSPEED"}  # fmt: skip
    assert str(config.distributed_type).split(".")[-1] == expected[name]
    if name.startswith("deepspeed"):
        assert config.deepspeed_config["zero_stage"] == int(name[-1])
        # Left to the trainer settings: a value here would contradict them and fail late.
        assert not {"gradient_accumulation_steps", "gradient_clipping"} & config.deepspeed_config.keys()
    if name == "fsdp":
        assert config.fsdp_config["fsdp_use_orig_params"] is True  # frozen and trainable parameters in one shard


# accelerate 1.15 turns FSDP on only for GPU-type setups (MULTI_GPU, ...; never MULTI_CPU), so
# `accelerate launch` with the shipped FSDP config runs plain DDP on a machine without GPUs. This
# script, run by the launcher in place of `-m hf_transfer`, makes accelerate take its one gloo
# process on the CPU for a GPU-type setup; everything else is real: accelerate's FSDP plugin from
# the shipped config, torch FSDP1 wrapping, training, the full-state-dict gathering to save, and all
# of hf_transfer. With one process each "shard" is the whole model. The script only records (into
# $FSDP_REPORT) what hf_transfer did: whether the run counted as sharded, the FSDP units at the
# first step, and which save path ran; the recorded functions still run as they are.
FSDP_ON_CPU = """
import json, os, sys
import torch.distributed as dist
from accelerate.state import PartialState
from accelerate.utils import DistributedType

prepare_backend = PartialState._prepare_backend

def gloo_as_gpu(self, cpu=False, sagemaker_dp=False, backend=None):
    prepare_backend(self, cpu, sagemaker_dp, backend)
    if not dist.is_initialized():
        dist.init_process_group("gloo")  # MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE from the launcher
    return "gloo", DistributedType.MULTI_GPU

PartialState._prepare_backend = gloo_as_gpu
os.environ["ACCELERATE_TORCH_DEVICE"] = "cpu"

from hf_transfer import distributed, strategies

report = {"saved_by": []}

def record(**items):
    report.update(items)
    with open(os.environ["FSDP_REPORT"], "w") as stream:
        json.dump(report, stream)

check_wrapped = distributed.check_wrapped

def recording_check_wrapped(trainer):
    from torch.distributed.fsdp import FullyShardedDataParallel
    units = [m for m in trainer.model.modules() if isinstance(m, FullyShardedDataParallel)]
    record(sharded=distributed.is_sharded(trainer), root_is_fsdp=trainer.model in units,
           units=sorted({type(m.module).__name__ for m in units if m is not trainer.model}))
    return check_wrapped(trainer)

distributed.check_wrapped = recording_check_wrapped

def recording(name, function):
    def call(*args, **kwargs):
        record(saved_by=report["saved_by"] + [name])
        return function(*args, **kwargs)
    return call

for cls in strategies.STRATEGIES.values():
    cls.save = recording("save", cls.save)
    cls.save_sharded = recording("save_sharded", cls.save_sharded)

from hf_transfer.cli import main
sys.exit(main(sys.argv[1:]))
"""


def fsdp_launch(tmp_path, argv, timeout=300):
    """`accelerate launch` with the shipped FSDP config, one process on the CPU (see FSDP_ON_CPU).
    Returns the finished process and what the run recorded."""
    script = tmp_path / "fsdp_on_cpu.py"
    script.write_text(FSDP_ON_CPU)
    report = tmp_path / "fsdp_report.json"
    # The shipped config, as launched on a machine without GPUs: no bf16 autocast, and the two
    # settings that put tensors on an accelerator before wrapping left off.
    launch = ["--config_file", str(CONFIGS / "fsdp.yaml"), "--num_processes", "1", "--mixed_precision", "no",
              "--fsdp_sync_module_states", "false", "--fsdp_cpu_ram_efficient_loading", "false",
              "--main_process_port", str(_free_port())]  # fmt: skip
    command = [sys.executable, "-m", "accelerate.commands.launch", *launch, str(script), *argv, "trainer.use_cpu=true"]
    env = {**cli_env(tmp_path), "FSDP_REPORT": str(report)}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    return done, json.loads(report.read_text()) if report.exists() else {}


def test_fsdp_wraps_the_blocks_the_model_declares(checkpoints, data_dir, tmp_path):
    """The shipped FSDP config names no block class: each of the model's _no_split_modules blocks
    becomes an FSDP unit, and hf_transfer's run knows the model is sharded (and saves it so)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    folder = tmp_path / "run"
    argv = [*tiny_overrides(checkpoints["llama"], data_dir), "trainer.num_train_epochs=1", f"hydra.run.dir={folder}"]
    done, report = fsdp_launch(tmp_path, argv)
    assert done.returncode == 0, done.stderr[-4000:]
    declared = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(checkpoints["llama"]))
    assert report["root_is_fsdp"] and report["units"] == sorted(declared._no_split_modules) == ["LlamaDecoderLayer"]
    assert report["sharded"] is True and report["saved_by"] == ["save_sharded"]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["distributed"]["wrapped_as"] == "FullyShardedDataParallel"


def test_gradual_unfreezing_under_the_shipped_fsdp_config_is_refused(checkpoints, data_dir, tmp_path):
    """The launcher says FSDP only through its environment (no trainer.fsdp): hf_transfer reads it
    and refuses, before loading anything, a strategy whose trainable set changes mid-run."""
    folder = tmp_path / "run"
    argv = [*tiny_overrides(checkpoints["bert"], data_dir), "strategy=partial_unfreeze", "strategy.num_layers=1",
            "strategy.unfreeze_every=1", f"hydra.run.dir={folder}"]  # fmt: skip
    done, report = fsdp_launch(tmp_path, argv)
    assert done.returncode != 0
    assert (
        "hf-transfer: error: gradual unfreezing (strategy.unfreeze_every) cannot run under FSDP: "
        "it fixes the trainable parameters when it wraps the model" in done.stderr
    ), done.stderr[-4000:]
    assert report == {} and not folder.exists()  # refused before any training step or save


@pytest.mark.parametrize(
    "strategy, settings, per_process",
    [
        # Each process computes half of the cached features, and both read all of them.
        ("head_only", ["strategy.cache=true"], ["trainer.per_device_train_batch_size=8"]),
        (
            "partial_unfreeze",
            ["strategy.num_layers=1", "strategy.cache=true"],
            ["trainer.per_device_train_batch_size=8"],
        ),
        # Adapters on a frozen base, through checkpointed blocks (non-reentrant) under DDP.
        (
            "lora",
            ["strategy.dropout=0.0", "trainer.gradient_checkpointing=true"],
            ["trainer.per_device_train_batch_size=8"],
        ),
        # Gradient accumulation across processes: 2 processes x 2 steps x 4 examples.
        ("full", [], ["trainer.per_device_train_batch_size=4", "trainer.gradient_accumulation_steps=2"]),
        # A mean-pooling head, imprinted on each process from the same examples.
        ("full", ["model.pooling=mean"], ["trainer.per_device_train_batch_size=8"]),
    ],
    ids=["head_only", "partial_unfreeze", "lora", "full", "full-mean_pooling"],
)
def test_each_strategy_trains_under_ddp_as_in_one_process(
    checkpoints, data_dir, tmp_path, strategy, settings, per_process
):
    """torchrun, 2 processes: frozen layers, LoRA adapters (with gradient checkpointing) and
    accumulated gradients train in step with one process that sees the same 16 examples per
    optimizer step."""
    common = ["recipe=tiny", f"model.source={checkpoints['bert']}", f"task.data.source={data_dir}",
              f"strategy={strategy}", *SAME_BATCHES, *settings]  # fmt: skip
    two, single = train_twice(tmp_path, common, per_process, ["trainer.per_device_train_batch_size=16"])
    assert two["trainable_parameters"] == single.metrics["trainable_parameters"]
    if "strategy.cache=true" in settings:
        cache = two["feature_cache"]
        assert cache["used"] and cache["storage"] == "disk" and cache["uncached_batches"] == 0, cache
        assert cache["examples"] == single.metrics["feature_cache"]["examples"]
        # Evaluation counted each test example once, not once per process.
        assert two["test"]["num_examples"] == single.metrics["test"]["num_examples"] == 32


def test_an_unwrapped_model_across_processes_is_stopped(checkpoints):
    from types import SimpleNamespace

    from transformers import AutoModelForSequenceClassification

    from hf_transfer.distributed import check_wrapped

    model = AutoModelForSequenceClassification.from_pretrained(checkpoints["bert"], num_labels=2)
    wrapped = torch.nn.Module()
    check_wrapped(SimpleNamespace(args=SimpleNamespace(world_size=2), model=model, model_wrapped=wrapped))
    check_wrapped(SimpleNamespace(args=SimpleNamespace(world_size=1), model=model, model_wrapped=model))
    with pytest.raises(RuntimeError, match="not wrapped for distributed training"):
        check_wrapped(SimpleNamespace(args=SimpleNamespace(world_size=2), model=model, model_wrapped=model))


def test_an_fsdp_model_counts_as_wrapped(tmp_path):
    """FSDP wraps in place (the Trainer holds the wrapper as model and model_wrapped): that
    is wrapped. One gloo process; FSDP1 as the shipped config uses, and FSDP2."""
    script = tmp_path / "fsdp.py"
    script.write_text(
        "import os, torch, torch.distributed as dist\n"
        "from types import SimpleNamespace\n"
        "from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard\n"
        "from hf_transfer.distributed import check_wrapped\n"
        "dist.init_process_group('gloo', rank=0, world_size=1, init_method='tcp://127.0.0.1:' + os.environ['PORT'])\n"
        "one = FullyShardedDataParallel(torch.nn.Linear(4, 4), device_id=torch.device('cpu'))\n"
        "two = fully_shard(torch.nn.Linear(4, 4))\n"
        "plain = torch.nn.Linear(4, 4)\n"
        "for model in (one, two):\n"
        "    check_wrapped(SimpleNamespace(args=SimpleNamespace(world_size=2), model=model, model_wrapped=model))\n"
        "try:\n"
        "    check_wrapped(SimpleNamespace(args=SimpleNamespace(world_size=2), model=plain, model_wrapped=plain))\n"
        "except RuntimeError as err:\n"
        "    print('refused:', err)\n"
    )
    env = {**cli_env(tmp_path), "PORT": str(_free_port())}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "refused: 2 processes, but the model was not wrapped" in done.stdout


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_twice(tmp_path, settings, two_process, one_process):
    """The same run by two processes (torchrun) with `two_process` settings and by one process
    with `one_process` settings (the same examples per optimizer step): both must end with the
    same weights and logged losses. Returns (the 2-process metrics, the 1-process result)."""
    from hf_transfer.compose import compose

    argv = [f"--config-dir={TEST_RECIPES}", *settings, *two_process, f"hydra.run.dir={tmp_path / 'two'}"]
    done = torchrun(tmp_path, argv)
    assert done.returncode == 0, done.stderr[-4000:]
    single = run(compose([*settings, *one_process], config_dir=str(TEST_RECIPES)), output_dir=tmp_path / "one")
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["distributed"]["world_size"] == 2
    one_weights, two_weights = (
        load_file(single.folder / "model.safetensors"),
        load_file(tmp_path / "two" / "model.safetensors"),
    )
    for name in one_weights:
        assert torch.allclose(one_weights[name], two_weights[name], atol=2e-5), name
    assert logged_losses(tmp_path / "two") == pytest.approx(logged_losses(single.folder), abs=2e-5)
    return two, single


def test_a_causal_lm_trains_under_ddp_as_in_one_process(checkpoints, tmp_path):
    """Token-count losses across processes (rows of different lengths, one example per row):
    each process's loss is its tokens' sum over the token count of the whole step."""
    import random

    from conftest import FILLER, NEGATIVE, POSITIVE

    rng = random.Random(0)
    data = tmp_path / "text"
    data.mkdir()
    words = FILLER + POSITIVE + NEGATIVE
    for split, count in (("train", 200), ("test", 8)):
        lines = [" ".join(rng.choices(words, k=rng.randint(2, 12))) for _ in range(count)]
        (data / f"{split}.txt").write_text("\n".join(lines) + "\n")
    settings = [
        "recipe=tiny", "task=tiny_text", f"model.source={checkpoints['gpt2']}", f"task.data.source={data}",
        "task.packing=false", "task.generation.prompts=[]",
        "model.config_overrides={resid_pdrop: 0.0, embd_pdrop: 0.0, attn_pdrop: 0.0}",
        "trainer.train_sampling_strategy=sequential", "trainer.optim=sgd", "trainer.max_grad_norm=1.0",
        "trainer.num_train_epochs=1", "trainer.warmup_steps=0", "strategy.learning_rate=0.5", "trainer.logging_steps=1",
        "trainer.load_best_model_at_end=false",  # 200 rows: 40 validate, 160 train (20 x 8)
    ]  # fmt: skip
    two, single = train_twice(tmp_path, settings, ["trainer.per_device_train_batch_size=4"],
                              ["trainer.per_device_train_batch_size=8"])  # fmt: skip
    assert two["test"]["perplexity"] == pytest.approx(single.metrics["test"]["perplexity"], rel=1e-4)


@pytest.mark.parametrize("task", ["tiny_ner", "tiny_qa"])
def test_token_classification_and_qa_under_ddp_as_in_one_process(checkpoints, tmp_path, task):
    """Per-token losses and window-level QA features: same weights, and evaluation (entity F1,
    exact match over windows gathered back in order, an odd test split) as in one process."""
    import random

    from test_question_answering import example
    from test_token_classification import sentence, write_conll

    rng = random.Random(0)
    data = tmp_path / "data"
    data.mkdir()
    if task == "tiny_ner":
        write_conll(data / "train.conll", [sentence(rng) for _ in range(96)])
        write_conll(data / "test.conll", [sentence(rng) for _ in range(31)])
    else:
        for split, count in (("train", 96), ("test", 31)):
            rows = [example(rng, f"{split}{i}") for i in range(count)]
            (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = ["recipe=tiny", f"task={task}", f"model.source={checkpoints['bert']}", f"task.data.source={data}",
                *SAME_BATCHES, "trainer.num_train_epochs=1"]  # fmt: skip
    two, single = train_twice(tmp_path, settings, ["trainer.per_device_train_batch_size=8"],
                              ["trainer.per_device_train_batch_size=16"])  # fmt: skip
    scores = ["precision", "recall", "f1", "accuracy"] if task == "tiny_ner" else ["exact_match", "f1"]
    assert two["test"]["num_examples"] == single.metrics["test"]["num_examples"] == 31
    assert {k: two["test"][k] for k in scores} == pytest.approx({k: single.metrics["test"][k] for k in scores})
    records = (tmp_path / "two" / "predictions_test.jsonl").read_text()
    assert records == (single.folder / "predictions_test.jsonl").read_text()


def test_fsdp_asked_for_on_cpus_is_refused_not_quietly_ddp(checkpoints, data_dir, tmp_path):
    """Without a GPU, accelerate wraps an FSDP launch in DDP: the run says so and stops."""
    launch = ["--config_file", str(CONFIGS / "fsdp.yaml"), "--num_processes", "1", "--mixed_precision", "no",
              "--fsdp_sync_module_states", "false", "--fsdp_cpu_ram_efficient_loading", "false",
              "--main_process_port", str(_free_port())]  # fmt: skip
    argv = [*tiny_overrides(checkpoints["bert"], data_dir, "trainer.max_steps=1"), f"hydra.run.dir={tmp_path / 'run'}",
            "trainer.use_cpu=true"]  # fmt: skip
    done = accelerate_launch(tmp_path, launch, argv)
    # The process ends with our one line and status 2; the launcher then reports a failed child.
    assert done.returncode != 0 and "exitcode: 2" in done.stderr, done.stderr[-2000:]
    assert (
        "hf-transfer: error: FSDP was asked for" in done.stderr and "accelerate runs FSDP on GPUs only" in done.stderr
    )
