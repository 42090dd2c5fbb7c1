"""`hpd convert`: any HPD or sentence-transformers model to either layout (loading and the HPD layout itself are
hpd_models')."""

import tempfile
from pathlib import Path

from torch import nn
from transformers import BertConfig, BertModel

from hpd_models import HEAD_FIELDS, drop_builder_settings, load_hpd, model_format, resolve, save_hpd_folder
from hpd_toolkit.training.output_dir import replace_folder


def save_sentence_transformers_folder(model, tokenizer, output_dir):
    """Writes the classic sentence-transformers stack: Transformer, Pooling, Dense (if any), Normalize (if on)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

    config = model.config
    encoder_fields = {k: v for k, v in config.to_dict().items() if k not in (*HEAD_FIELDS, "auto_map", "architectures")}
    encoder_fields["model_type"] = "bert"
    encoder = BertModel(BertConfig(**encoder_fields), add_pooling_layer=False)
    encoder.load_state_dict(model.bert.state_dict(), strict=True)
    with tempfile.TemporaryDirectory() as scratch:
        encoder.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        modules = [
            Transformer(scratch, max_seq_length=config.max_seq_length),
            Pooling(config.hidden_size, pooling_mode=config.pooling),
        ]
        if model.projection is not None:
            activation = nn.Tanh() if config.projection_activation == "tanh" else nn.Identity()
            dense = Dense(config.hidden_size, config.embedding_dim, bias=config.projection_bias, activation_function=activation)
            dense.linear.load_state_dict(model.projection.state_dict(), strict=True)
            modules.append(dense)
        if config.normalize:
            modules.append(Normalize())
        SentenceTransformer(modules=modules, similarity_fn_name="cosine").save(str(output_dir))
    drop_builder_settings(output_dir)
    return Path(output_dir)


def convert(source, output_dir, to="hpd", overwrite=False, trust_remote_code=False):
    """`hpd convert`: any HPD or sentence-transformers model (folder or Hub id) to the `to` format.

    `output_dir` must be empty, missing or an earlier hpd output unless `overwrite`; it is never the source."""
    if to not in ("hpd", "sentence-transformers"):
        raise ValueError(f"--to must be 'hpd' or 'sentence-transformers'; got {to!r}.")
    folder = resolve(source)
    model_format(folder)  # is it a model at all: that error comes before any about the output
    save = save_hpd_folder if to == "hpd" else save_sentence_transformers_folder
    with replace_folder(output_dir, overwrite=overwrite, sources=[folder]) as scratch:
        model, tokenizer = load_hpd(folder, trust_remote_code)
        save(model, tokenizer, scratch)
    return Path(output_dir)
