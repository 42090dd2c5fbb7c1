"""HPD sentence encoder: BERT-family encoder -> pooling -> head (Dense, activation) (-> L2 normalise).

`HPDModel(...)(input_ids, attention_mask).sentence_embedding` is the sentence embedding; `encode`
turns a list of strings into embeddings. This file ships to the Hub as remote code next to
`configuration_hpd.py`, so it depends on torch and transformers only.
"""

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoTokenizer, BertModel, BertPreTrainedModel
from transformers.utils import ModelOutput
from transformers.utils.logging import tqdm

try:  # loaded as remote code: the two files sit in one package
    from .configuration_hpd import HPDConfig, TruncationWarning
except ImportError:  # imported from the installed toolkit, where both are top-level modules
    from configuration_hpd import HPDConfig, TruncationWarning


@dataclass
class HPDModelOutput(ModelOutput):
    """
    sentence_embedding: the final sentence vector, `(batch, embedding_dim or hidden_size)`.
    pooled_embedding: the pooled token states before the head, `(batch, hidden_size)`.
    last_hidden_state: the encoder's token states, `(batch, seq_len, hidden_size)`.
    hidden_states / attentions: per layer, when asked for with `output_hidden_states` / `output_attentions`.
    """

    sentence_embedding: torch.Tensor | None = None
    pooled_embedding: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


def pool(token_states, attention_mask, mode):
    """Pools `(batch, seq, hidden)` token states into `(batch, hidden)`, ignoring padding."""
    if mode == "cls":
        return token_states[:, 0]
    mask = attention_mask.unsqueeze(-1).to(token_states.dtype)
    if mode == "mean":
        return (token_states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    # max: padding must never win, so it is set to the dtype's lowest value first
    return token_states.masked_fill(mask == 0, torch.finfo(token_states.dtype).min).max(1).values


class HPDModel(BertPreTrainedModel):
    config_class = HPDConfig
    base_model_prefix = "bert"

    def __init__(self, config: HPDConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        if config.embedding_dim is None:
            self.projection = None
        else:
            # the head's Dense layer, named as in the published checkpoints' weights (projection.*)
            self.projection = nn.Linear(config.hidden_size, config.embedding_dim, bias=config.projection_bias)
        self._tokenizer = None
        self._loading_kwargs = {}  # how the weights were loaded: the saved tokenizer is loaded the same way
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """As `PreTrainedModel.from_pretrained`, but weights that do not fit the config are an error.

        transformers would initialise missing weights at random (e.g. a config with more layers than the
        checkpoint holds) and only log it; an HPD folder must hold exactly the weights its config describes."""
        output_loading_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        problems = [f"{kind.replace('_', ' ')}: {', '.join(sorted(map(str, info[kind]))[:3])}"
                    + (f" and {len(info[kind]) - 3} more" if len(info[kind]) > 3 else "")
                    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys") if info.get(kind)]
        if problems:
            raise ValueError(f"{pretrained_model_name_or_path}: the weights do not match config.json ("
                             f"{'; '.join(problems)}); the weights file is incomplete or config.json was edited: "
                             "restore the model's files.")
        model._loading_kwargs = {name: kwargs[name] for name in
                                 ("revision", "trust_remote_code", "token", "cache_dir", "local_files_only")
                                 if kwargs.get(name) is not None}
        return (model, info) if output_loading_info else model

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        return_dict=None,
        **kwargs,
    ):
        encoded = self.bert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **kwargs,
        )
        token_states = encoded.last_hidden_state
        if attention_mask is None:
            attention_mask = torch.ones(token_states.shape[:2], dtype=torch.long, device=token_states.device)
        pooled = pool(token_states, attention_mask, self.config.pooling)

        embedding = pooled
        if self.projection is not None:
            embedding = self.projection(pooled)
            if self.config.projection_activation == "tanh":
                embedding = torch.tanh(embedding)
        if self.config.normalize:
            embedding = F.normalize(embedding, p=2, dim=-1)

        output = HPDModelOutput(
            sentence_embedding=embedding,
            pooled_embedding=pooled,
            last_hidden_state=token_states,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
        )
        return output if return_dict is not False else output.to_tuple()

    @torch.inference_mode()
    def encode(
        self,
        sentences,
        tokenizer=None,
        batch_size=64,
        normalize_embeddings=False,
        convert_to_numpy=True,
        show_progress_bar=None,
        truncate_dim=None,
        output_value="sentence_embedding",
    ):
        """Embeds a string or a list of strings: `(dim,)` or `(len(sentences), dim)`, float32.

        Sentences are sorted by length so that each batch pads little, then put back in order.
        The tokenizer defaults to the one saved with the model. The progress bar shows by default
        when there is more than one batch. `truncate_dim` keeps the first k coordinates (a size in
        `config.matryoshka_dims`; others warn), before `normalize_embeddings`, as sentence-transformers does.
        `output_value="pooled_embedding"` returns the pooled encoder output that the head reads.
        """
        if output_value not in ("sentence_embedding", "pooled_embedding"):
            raise ValueError(f"output_value must be 'sentence_embedding' or 'pooled_embedding'; got {output_value!r}.")
        if truncate_dim is not None:
            warning = self.config.truncation_warning(truncate_dim)
            if warning:
                # stacklevel 3: the caller's line (inference_mode wraps encode)
                warnings.warn(warning, TruncationWarning, stacklevel=3)
        single = isinstance(sentences, str)
        sentences = [sentences] if single else list(sentences)
        tokenizer = tokenizer if tokenizer is not None else self._saved_tokenizer()
        if show_progress_bar is None:
            show_progress_bar = len(sentences) > batch_size

        was_training = self.training
        self.eval()
        order = sorted(range(len(sentences)), key=lambda i: -len(sentences[i]))
        dim = self.config.projection_dim if output_value == "sentence_embedding" else self.config.hidden_size
        sorted_embeddings = []
        for start in tqdm(range(0, len(order), batch_size), desc="Encoding", disable=not show_progress_bar):
            batch = [sentences[i] for i in order[start : start + batch_size]]
            features = tokenizer(
                batch, padding=True, truncation=True, max_length=self.config.max_seq_length, return_tensors="pt"
            ).to(self.device)
            sorted_embeddings.append(getattr(self(**features), output_value).float())
        self.train(was_training)

        embeddings = torch.empty(len(sentences), dim, device=self.device)
        if sorted_embeddings:
            embeddings[torch.tensor(order, device=self.device)] = torch.cat(sorted_embeddings)
        if not torch.isfinite(embeddings).all():
            raise ValueError(f"{self.name_or_path or 'the model'} produced NaN or infinite embeddings: its weights "
                             "hold NaN or inf, or float16 overflowed; check the weights or load the model in float32.")
        if truncate_dim is not None:
            embeddings = embeddings[:, :truncate_dim].contiguous()
        if normalize_embeddings:
            embeddings = F.normalize(embeddings, p=2, dim=-1)
        embeddings = embeddings.cpu()
        if convert_to_numpy:
            embeddings = embeddings.numpy()
        return embeddings[0] if single else embeddings

    def _saved_tokenizer(self):
        if self._tokenizer is None:
            if not self.name_or_path:
                raise ValueError("This HPDModel was not loaded from a folder: pass tokenizer= to encode().")
            # Remote tokenizer code runs only if the caller trusted it when loading the model.
            self._tokenizer = AutoTokenizer.from_pretrained(
                self.name_or_path, **{"trust_remote_code": False, **self._loading_kwargs}
            )
        return self._tokenizer


# save_pretrained writes `auto_map` into config.json and copies both files next to the weights.
HPDConfig.register_for_auto_class()
HPDModel.register_for_auto_class("AutoModel")
