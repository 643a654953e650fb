"""Sequence classification from the mean of a base model's token states.

Sentence-transformers checkpoints (all-MiniLM-L6-v2 and its kind) were trained so that the
mean of their token states carries a text's meaning; `AutoModelForSequenceClassification`
reads BERT's pooler instead (the first token through a dense layer they never trained). This
model puts the new head on the mean, as sentence-transformers and SetFit do.

The head is a cosine classifier: each class has a vector, and a text scores the cosine between
it and the text's normalised mean, times `logit_scale`, the geometry sentence encoders were
trained in. `imprint` sets the class vectors to the mean directions of labelled examples (weight
imprinting, Qi et al., 2018), so that training starts from a nearest-centroid classifier rather
than a random one. With `logit_scale=None` (regression) the head is a plain linear layer.

This file imports only torch and transformers: `save_pretrained` copies it next to the weights,
so that `AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)`
(and `pipeline(..., trust_remote_code=True)`) load a saved model without hf_transfer.
"""

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, PreTrainedConfig, PreTrainedModel
from transformers.configuration_utils import SubConfigSpec
from transformers.loss.loss_utils import ForSequenceClassificationLoss
from transformers.modeling_outputs import SequenceClassifierOutput


class MeanPoolingConfig(PreTrainedConfig):
    """A base model's config (`base`) and the head on the mean of its token states."""

    model_type = "mean_pooling_classifier"
    sub_configs_defaults = {"base": SubConfigSpec(config_class=AutoConfig, model_type="bert")}

    base: PreTrainedConfig | dict | None = None
    # None: the base model's classifier_dropout, else its hidden dropout, as BERT's classifier does.
    classifier_dropout: float | None = None
    # Logits are cos(class vector, normalised mean) times this; None: a linear layer on the mean.
    logit_scale: float | None = 20.0


class MeanPoolingForSequenceClassification(PreTrainedModel):
    config_class = MeanPoolingConfig
    base_model_prefix = "base"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    # The loss is a plain batch mean: the Trainer scales it for gradient accumulation.
    accepts_loss_kwargs = False

    def __init__(self, config: MeanPoolingConfig, base: PreTrainedModel | None = None):
        """`base`: an already loaded base model (else one is built from `config.base`)."""
        super().__init__(config)
        self.base = base if base is not None else AutoModel.from_config(config.base)
        # One config for both, as EncoderDecoderModel does: the base model's attention kernel was
        # chosen when it was built, on its own copy.
        config.base._attn_implementation = self.base.config._attn_implementation
        self.base.config = config.base
        if getattr(self.base, "pooler", None) is not None:
            self.base.pooler = None  # BERT's pooler reads the first token only: unused here
        dropout = config.classifier_dropout
        if dropout is None:  # model.config_overrides reach the base model's config
            dropout = getattr(config.base, "classifier_dropout", None)
        if dropout is None:
            dropout = getattr(config.base, "hidden_dropout_prob", 0.1)
        self.dropout = nn.Dropout(dropout)
        # A cosine score needs no bias where a text has one class (a class is its direction); each
        # label of a multi-label text is a yes or no of its own, with its own threshold.
        bias = config.logit_scale is None or config.problem_type == "multi_label_classification"
        self.classifier = nn.Linear(config.base.hidden_size, config.num_labels, bias=bias)
        self.post_init()

    @classmethod
    def from_base(cls, base: PreTrainedModel, **config_kwargs) -> "MeanPoolingForSequenceClassification":
        """A new head on a loaded base model; `config_kwargs` go to the config (labels, ...)."""
        return cls(MeanPoolingConfig(base=base.config.to_dict(), **config_kwargs), base=base)

    def _init_weights(self, module: nn.Module) -> None:
        if module is self.classifier:
            module.weight.data.normal_(mean=0.0, std=getattr(self.config.base, "initializer_range", 0.02))
            if module.bias is not None:
                module.bias.data.zero_()

    def get_input_embeddings(self) -> nn.Module:
        return self.base.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.base.set_input_embeddings(value)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> SequenceClassifierOutput:
        # Only what the caller gave: not every base model takes token types or positions.
        optional = {"token_type_ids": token_type_ids, "position_ids": position_ids, "inputs_embeds": inputs_embeds,
                    "output_attentions": output_attentions, "output_hidden_states": output_hidden_states}  # fmt: skip
        outputs = self.base(
            input_ids=input_ids,
            attention_mask=attention_mask,
            return_dict=True,
            **{key: value for key, value in optional.items() if value is not None},
        )
        logits = self.classify(self._pool(outputs.last_hidden_state, attention_mask))
        return SequenceClassifierOutput(
            loss=None if labels is None else self._loss(logits, labels),
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """The logits for what `embed` returns (dropout first, in training mode)."""
        if self.config.logit_scale is None:
            return self.classifier(self.dropout(pooled))
        classes = nn.functional.normalize(self.classifier.weight, dim=-1)
        logits = self.config.logit_scale * nn.functional.linear(self.dropout(pooled), classes)
        return logits if self.classifier.bias is None else logits + self.classifier.bias

    def _pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The mean of the real tokens' states (normalised for the cosine head)."""
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], device=hidden.device)
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return pooled if self.config.logit_scale is None else nn.functional.normalize(pooled, dim=-1)

    @torch.no_grad()
    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **inputs) -> torch.Tensor:
        """What the head reads, for a batch of texts (no dropout where the model is in eval mode)."""
        hidden = self.base(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **inputs)
        return self._pool(hidden.last_hidden_state, attention_mask)

    @torch.no_grad()
    def imprint(self, embeddings: torch.Tensor, labels: torch.Tensor) -> list[int]:
        """Set each class's vector to the mean direction of its examples' `embeddings` (from
        `embed`); `labels`: class ids, or multi-hot rows, whose labels' thresholds (the bias)
        go halfway between the mean scores of the texts with and without them. Returns the
        classes that had no example (their vectors are left as they were)."""
        if self.config.logit_scale is None:
            raise ValueError("imprint needs the cosine head (logit_scale set)")
        members = labels.float() if labels.dim() == 2 else nn.functional.one_hot(labels, self.config.num_labels).float()
        members = members.to(embeddings.device)
        counts = members.sum(dim=0)
        centroids = (members.T @ embeddings) / counts.clamp(min=1).unsqueeze(-1)
        seen = counts > 0
        weight = self.classifier.weight
        weight[seen] = nn.functional.normalize(centroids[seen], dim=-1).to(weight.dtype)
        if self.classifier.bias is not None:
            classes = nn.functional.normalize(weight, dim=-1).to(embeddings.dtype)
            scores = self.config.logit_scale * embeddings @ classes.T  # the logits before the bias
            with_label = (members * scores).sum(dim=0) / counts.clamp(min=1)
            without = ((1 - members) * scores).sum(dim=0) / (len(members) - counts).clamp(min=1)
            both = seen & (counts < len(members))
            self.classifier.bias[both] = -((with_label + without) / 2)[both].to(weight.dtype)
        return [int(c) for c in torch.nonzero(~seen).flatten()]

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """transformers' own sequence-classification loss (the problem type from the labels if
        unset), with number and multi-hot labels in the logits' dtype."""

        numbers = labels.is_floating_point() or self.config.problem_type in ("regression", "multi_label_classification")
        return ForSequenceClassificationLoss(labels.to(logits.dtype) if numbers else labels, logits, self.config)


def register() -> None:
    """Let the Auto classes (and `pipeline`) load these models in this process, and make
    `save_pretrained` write this file and its `auto_map` beside the weights."""
    AutoConfig.register(MeanPoolingConfig.model_type, MeanPoolingConfig, exist_ok=True)
    AutoModelForSequenceClassification.register(MeanPoolingConfig, MeanPoolingForSequenceClassification, exist_ok=True)
    MeanPoolingConfig.register_for_auto_class()
    MeanPoolingForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
