"""Moves sentence encoders between the sentence-transformers layout and HPD folders.

An HPD folder holds `config.json` (model_type `hpd`, with `auto_map`), `model.safetensors`, the two
remote-code files, the tokenizer and the sentence-transformers files that wrap the whole model as one
`Transformer` module, so it loads with `AutoModel`, `SentenceTransformer` and `HPDModel` alike.

sentence-transformers itself reads the source folder (2022 layout with `pytorch_model.bin` and
`pooling_mode_*` keys, or the current one); this file only maps its modules onto `HPDModel`.
"""

import json
import pickle
import shutil
import tempfile
from pathlib import Path

from torch import nn
from transformers import AutoTokenizer, BertConfig, BertModel

from configuration_hpd import POOLING_MODES, HPDConfig
from hpd_inference import weights_sha256  # noqa: F401 (re-exported: results and releases name weights by it)
from modeling_hpd import HPDModel
from hpd_toolkit.training.output_dir import replace_folder

HEAD_FIELDS = ("pooling", "embedding_dim", "projection_activation", "projection_bias", "normalize", "max_seq_length",
               "matryoshka_dims")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
ACTIVATIONS = {nn.Tanh: "tanh", nn.Identity: "identity"}
# Values transformers records in tokenizer_config.json about where the tokenizer was loaded from: they
# describe the machine that wrote the folder, not the model.
BUILDER_SETTINGS = ("is_local", "local_files_only", "name_or_path", "_name_or_path", "cache_dir", "_commit_hash")


def register_hpd_classes():
    """Lets AutoConfig/AutoModel (hence sentence-transformers) load HPD folders with the installed classes.

    With these registered, `trust_remote_code=False` loads an HPD folder without running its Python files;
    only `trust_remote_code=True` would prefer the folder's own copy."""
    from transformers import AutoConfig, AutoModel

    AutoConfig.register("hpd", HPDConfig, exist_ok=True)
    AutoModel.register(HPDConfig, HPDModel, exist_ok=True)


def load_error(name, error, what="a model"):
    """The exception to raise for `error` from loading model `name`: one line naming the model and the fix."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if isinstance(error, pickle.UnpicklingError):
        detail = next((line for line in lines[1:] if "GLOBAL" in line), lines[0] if lines else "")
        return ValueError(f"{name}: refusing to load pickled weights (pytorch_model.bin): torch's weights_only "
                          f"loading rejected them ({detail}); convert them to safetensors with a tool you trust, "
                          "or use the model's model.safetensors.")
    if type(error).__name__ == "SafetensorError":
        return ValueError(f"{name}: the safetensors weights cannot be read ({' '.join(lines)}): the file is truncated "
                          "or damaged; download or copy it again.")
    if isinstance(error, (ValueError, OSError)) and str(name) in " ".join(lines):
        return error  # already names the model (e.g. HPDModel's weight check)
    return ValueError(f"{name}: cannot be loaded as {what} ({lines[0] if lines else type(error).__name__}).")


def resolve(name_or_path):
    """A local folder as a Path; otherwise a Hub id, downloaded (and cached) by huggingface_hub."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") != 1:
        raise FileNotFoundError(f"{name_or_path}: no such model folder (expected a local folder or a Hub id ORG/NAME).")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name_or_path))
    except Exception as error:  # offline, unknown repo, gated...: one line naming the cause
        raise FileNotFoundError(
            f"{name_or_path}: not a local folder and could not be fetched from the Hub ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no detail'})."
        ) from None


def model_format(folder):
    """'hpd' or 'sentence-transformers'; a clear error for anything else."""
    folder = Path(folder)
    if _read_json(folder / "config.json", missing_ok=True).get("model_type") == "hpd":
        return "hpd"
    if (folder / "modules.json").is_file():
        return "sentence-transformers"
    raise ValueError(
        f"{folder} is neither an HPD folder (config.json with model_type 'hpd') nor a sentence-transformers "
        "folder (modules.json): point at a model folder saved by HPD or sentence-transformers."
    )


def load_hpd(name_or_path, trust_remote_code=False):
    """Loads an HPD folder or converts a sentence-transformers model: returns (HPDModel in eval mode, tokenizer).

    HPD folders load with the installed classes; `trust_remote_code` only concerns other Python code a
    folder ships (a custom tokenizer or sentence-transformers module)."""
    folder = resolve(name_or_path)
    if model_format(folder) == "sentence-transformers":
        return from_sentence_transformers(folder, trust_remote_code)
    _require_weights(folder, "HPD model")
    try:
        model = HPDModel.from_pretrained(folder).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except Exception as error:  # damaged or pickled weights, weights that do not fit config.json: one line
        raise load_error(folder, error) from None
    return model, tokenizer


def from_sentence_transformers(folder, trust_remote_code=False):
    """Builds an HPDModel with the same weights as the sentence-transformers model in `folder`."""
    folder = Path(folder)
    _check_sentence_transformers_folder(folder)
    from sentence_transformers import SentenceTransformer

    try:
        st_model = SentenceTransformer(str(folder), device="cpu", trust_remote_code=trust_remote_code)
    except ValueError as error:  # e.g. a pooling mode sentence-transformers does not know
        raise ValueError(f"{folder}: sentence-transformers cannot load it: {error}") from None
    except Exception as error:  # damaged or pickled weights: one line
        raise load_error(folder, error) from None
    transformer, *head = list(st_model)
    kinds = [type(module).__name__ for module in head]
    if kinds not in (["Pooling"], ["Pooling", "Dense"], ["Pooling", "Normalize"], ["Pooling", "Dense", "Normalize"]):
        raise ValueError(
            f"{folder}: modules {[type(transformer).__name__, *kinds]} do not fit HPD, which needs "
            "Transformer, Pooling, optionally Dense, optionally Normalize."
        )
    pooling, dense = head[0], next((m for m in head if type(m).__name__ == "Dense"), None)

    encoder = transformer.auto_model
    if pooling.pooling_mode not in POOLING_MODES:
        raise ValueError(
            f"{folder}: pooling mode {pooling.pooling_mode!r} is not supported; HPD pools with one of "
            f"{', '.join(POOLING_MODES)}."
        )
    if dense is not None and (dense.use_residual or type(dense.activation_function) not in ACTIVATIONS):
        raise ValueError(
            f"{folder}: the Dense module must be a plain linear layer with Tanh or Identity activation; got "
            f"{type(dense.activation_function).__name__}{' with a residual' if dense.use_residual else ''}."
        )

    encoder_fields = {k: v for k, v in encoder.config.to_dict().items() if k not in ("model_type", "architectures")}
    config = HPDConfig(
        **encoder_fields,
        pooling=pooling.pooling_mode,
        embedding_dim=None if dense is None else dense.out_features,
        projection_activation="tanh" if dense is None else ACTIVATIONS[type(dense.activation_function)],
        projection_bias=True if dense is None else dense.bias,
        normalize=kinds[-1] == "Normalize",
        max_seq_length=min(transformer.max_seq_length or encoder.config.max_position_embeddings,
                           encoder.config.max_position_embeddings),
    )
    model = HPDModel(config).eval()
    encoder_state = {k: v for k, v in encoder.state_dict().items() if not k.startswith("pooler.")}
    model.bert.load_state_dict(encoder_state, strict=True)
    if dense is not None:
        model.projection.load_state_dict(dense.linear.state_dict(), strict=True)
    return model, transformer.tokenizer


def save_hpd_folder(model, tokenizer, output_dir, weights_dtype="float32"):
    """Writes an HPD folder that loads with AutoModel, SentenceTransformer and HPDModel (all with the same weights).

    With `weights_dtype="float16"` the weights are stored in half precision (half the bytes) while config.json
    keeps `dtype: float32`, so every loader computes in float32; `model` itself is left rounded to float16
    precision, i.e. it computes exactly what the folder loads as."""
    if weights_dtype not in ("float32", "float16"):
        raise ValueError(f"weights dtype must be 'float32' or 'float16'; got {weights_dtype!r}.")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.model_max_length = model.config.max_seq_length  # the same truncation for every loader
    if weights_dtype == "float16":
        compute_dtype = model.dtype
        model.half().save_pretrained(output_dir)
        model.to(compute_dtype)
        config = _read_json(output_dir / "config.json")
        config["dtype"] = str(compute_dtype).removeprefix("torch.")  # transformers loads in this dtype
        (output_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    else:
        model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)

    # sentence-transformers writes its own description of the folder: one Transformer module whose
    # forward is HPDModel.forward and whose output is the finished sentence embedding.
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Transformer

    remote = {"trust_remote_code": True}
    module = Transformer(
        str(output_dir),
        model_kwargs=remote,
        config_kwargs=remote,
        processor_kwargs=remote,
        modality_config={"text": {"method": "forward", "method_output_name": "sentence_embedding"}},
        module_output_name="sentence_embedding",
    )
    with tempfile.TemporaryDirectory() as scratch:
        SentenceTransformer(modules=[module], similarity_fn_name="cosine").save(scratch, create_model_card=False)
        for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
            shutil.copy(Path(scratch) / name, output_dir / name)
    drop_builder_settings(output_dir)
    return output_dir


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


def drop_builder_settings(folder):
    """Removes BUILDER_SETTINGS from the folder's tokenizer configs, so its files do not depend on where it was built."""
    for path in Path(folder).rglob("tokenizer_config.json"):
        config = _read_json(path)
        if any(key in config for key in BUILDER_SETTINGS):
            kept = {key: value for key, value in config.items() if key not in BUILDER_SETTINGS}
            path.write_text(json.dumps(kept, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


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


def _check_sentence_transformers_folder(folder):
    """Finds what sentence-transformers would fail on obscurely, and says it in one line."""
    modules = _read_json(folder / "modules.json")
    if not modules or not str(modules[0].get("type", "")).endswith("Transformer"):
        raise ValueError(f"{folder}/modules.json: the first module must be a Transformer; HPD needs a transformer encoder.")
    transformer_dir = folder / modules[0].get("path", "")
    encoder_config = _read_json(transformer_dir / "config.json")
    if encoder_config.get("model_type") != "bert":
        raise ValueError(
            f"{folder}: the encoder is model_type {encoder_config.get('model_type')!r}; HPD supports BERT-family "
            "encoders (model_type 'bert', e.g. BERT, TinyBERT, MiniLM)."
        )
    _require_weights(transformer_dir, "Transformer module")
    for module in modules[1:]:
        kind, module_dir = str(module.get("type", "")).rsplit(".", 1)[-1], folder / module.get("path", "")
        if kind == "Dense":
            _require_weights(module_dir, "Dense module")
            in_features = _read_json(module_dir / "config.json").get("in_features")
            if in_features != encoder_config.get("hidden_size"):
                raise ValueError(
                    f"{module_dir}: Dense in_features is {in_features} but the encoder's hidden size is "
                    f"{encoder_config.get('hidden_size')}: the Dense layer belongs to another encoder."
                )
    return modules


def _require_weights(folder, what):
    if not any((Path(folder) / name).is_file() for name in WEIGHT_FILES):
        raise FileNotFoundError(
            f"{folder}: no weights file for the {what} (expected model.safetensors or pytorch_model.bin); "
            "the download or copy is incomplete."
        )


def _read_json(path, missing_ok=False):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise FileNotFoundError(f"{path}: missing; the model folder is incomplete.") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}).") from None
