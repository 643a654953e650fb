"""hf_transfer: fine-tune pretrained Hugging Face checkpoints for NLP tasks.

    python -m hf_transfer recipe=bert_sentiment strategy=lora

From Python:

    from hf_transfer.compose import compose
    from hf_transfer.run import run

    result = run(compose(["recipe=bert_sentiment", "strategy=lora"]), output_dir="runs/mine")
    print(result.metrics["test"]["accuracy"])
"""

__version__ = "0.1.0"
