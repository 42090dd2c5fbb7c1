"""Model I/O, shared by training/ and eval/: where a model is (`resolve`: a local folder or a Hub id), what it is
(`model_format`), loading it (`load_hpd` as an HPDModel, `load_encoder` / `load_any_encoder` as an encoder with
sentence-transformers' `encode`, exported graphs through hpd_inference), saving an HPD folder (`save_hpd_folder`),
and encoding many sentences in batches of equal token length (`encode_by_length`).

An HPD folder holds `config.json` (model_type `hpd`, with `auto_map`), `model.safetensors`, the two remote-code
files, the tokenizer and the sentence-transformers files that wrap the whole model as one `Transformer` module, so
it loads with `AutoModel`, `SentenceTransformer` and `HPDModel` alike. sentence-transformers itself reads a source
folder (2022 layout with `pytorch_model.bin` and `pooling_mode_*` keys, or the current one); `load_hpd` only maps
its modules onto `HPDModel`. Weight fingerprints are hpd_inference's `weights_sha256` (exported graphs need it
without torch).
"""

import json
import pickle
import shutil
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
from torch import nn
from transformers import AutoTokenizer

from configuration_hpd import POOLING_MODES, HPDConfig, TruncationWarning, truncation_warning
from modeling_hpd import HPDModel

HEAD_FIELDS = ("pooling", "embedding_dim", "projection_activation", "projection_bias", "normalize", "max_seq_length",
               "matryoshka_dims")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
ACTIVATIONS = {nn.Tanh: "tanh", nn.Identity: "identity"}
# Values transformers records in tokenizer_config.json about where the tokenizer was loaded from: they
# describe the machine that wrote the folder, not the model.
BUILDER_SETTINGS = ("is_local", "local_files_only", "name_or_path", "_name_or_path", "cache_dir", "_commit_hash")


def locate(name_or_path):
    """A local folder as a Path, or a Hub id (ORG/NAME) as given; a clear error for anything else."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    name = str(name_or_path)
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise FileNotFoundError(f"{name}: no such model folder (expected a local folder or a Hub id ORG/NAME).")
    return name


def resolve(name_or_path):
    """A local folder as a Path; a Hub id downloaded (and cached) by huggingface_hub, as the local Path."""
    located = locate(name_or_path)
    if isinstance(located, Path):
        return located
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(located))
    except Exception as error:  # offline, unknown repo, gated...: one line naming the cause
        detail = str(error).splitlines()[0] if str(error) else "no detail"
        raise FileNotFoundError(f"{located}: not a local folder and could not be fetched from the Hub "
                                f"({type(error).__name__}: {detail}).") from None


def model_format(folder):
    """'hpd' or 'sentence-transformers'; a clear error for anything else."""
    folder = Path(folder)
    if _read_json(folder / "config.json", missing_ok=True).get("model_type") == "hpd":
        return "hpd"
    if (folder / "modules.json").is_file():
        return "sentence-transformers"
    raise ValueError(f"{folder} is neither an HPD folder (config.json with model_type 'hpd') nor a "
                     "sentence-transformers folder (modules.json): point at a model folder saved by HPD or "
                     "sentence-transformers.")


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
        raise ValueError(f"{folder}: modules {[type(transformer).__name__, *kinds]} do not fit HPD, which needs "
                         "Transformer, Pooling, optionally Dense, optionally Normalize.")
    pooling, dense = head[0], next((m for m in head if type(m).__name__ == "Dense"), None)

    encoder = transformer.auto_model
    if pooling.pooling_mode not in POOLING_MODES:
        raise ValueError(f"{folder}: pooling mode {pooling.pooling_mode!r} is not supported; HPD pools with one of "
                         f"{', '.join(POOLING_MODES)}.")
    if dense is not None and (dense.use_residual or type(dense.activation_function) not in ACTIVATIONS):
        raise ValueError(f"{folder}: the Dense module must be a plain linear layer with Tanh or Identity activation; "
                         f"got {type(dense.activation_function).__name__}"
                         f"{' with a residual' if dense.use_residual else ''}.")

    encoder_fields = {k: v for k, v in encoder.config.to_dict().items() if k not in ("model_type", "architectures")}
    config = HPDConfig(**encoder_fields, pooling=pooling.pooling_mode, normalize=kinds[-1] == "Normalize",
                       embedding_dim=None if dense is None else dense.out_features,
                       projection_activation="tanh" if dense is None else ACTIVATIONS[type(dense.activation_function)],
                       projection_bias=True if dense is None else dense.bias,
                       max_seq_length=min(transformer.max_seq_length or encoder.config.max_position_embeddings,
                                          encoder.config.max_position_embeddings))
    model = HPDModel(config).eval()
    encoder_state = {k: v for k, v in encoder.state_dict().items() if not k.startswith("pooler.")}
    model.bert.load_state_dict(encoder_state, strict=True)
    if dense is not None:
        model.projection.load_state_dict(dense.linear.state_dict(), strict=True)
    return model, transformer.tokenizer


def load_encoder(model, max_seq_length=None, device=None, trust_remote_code=False):
    """Any HPD folder, sentence-transformers folder or Hub id, as a SentenceTransformer.

    HPD models load with the installed HPD classes (their weights checked against their config); Python
    code shipped with any other model runs only with `trust_remote_code`."""
    from sentence_transformers import SentenceTransformer

    located = locate(model)  # a Hub id: sentence-transformers fetches only the files it needs
    register_hpd_classes()
    try:
        encoder = SentenceTransformer(str(located), device=device, trust_remote_code=trust_remote_code)
    except Exception as error:  # whatever the library raised, the user needs the folder and the cause
        if "trust_remote_code" in str(error):
            raise ValueError(f"{model} ships its own Python code, which runs only with --trust-remote-code; "
                             "pass it if you trust the model's source.") from None
        raise load_error(model, error, "a sentence encoder") from None
    if max_seq_length is not None:
        check_max_seq_length(model, max_seq_length, getattr(encoder[0].auto_model.config, "max_position_embeddings", None))
        encoder.max_seq_length = max_seq_length
    return encoder


def load_any_encoder(model, backend="torch", file_name=None, trust_remote_code=False, max_seq_length=None):
    """torch: any HPD or sentence-transformers model as a SentenceTransformer; onnx/openvino: the graph that
    `hpd export` wrote into an HPD folder."""
    if backend == "torch":
        if file_name is not None:
            raise ValueError("--file-name chooses an exported graph: use it with --backend onnx or openvino.")
        return load_encoder(model, max_seq_length, trust_remote_code=trust_remote_code)
    from hpd_inference import load_backend

    encoder = load_backend(model, backend, file_name)
    if max_seq_length is not None:
        check_max_seq_length(model, max_seq_length, encoder.config.get("max_position_embeddings"))
        encoder.max_seq_length = max_seq_length
    return encoder


def check_max_seq_length(model, max_seq_length, positions):
    if max_seq_length < 1 or (positions is not None and max_seq_length > positions):
        raise ValueError(f"--max-seq-length {max_seq_length} is outside what {model} can read (1 to {positions} "
                         "tokens, its max_position_embeddings); choose a length in that range.")


def check_truncation(encoder, dim, output_dim=None, name="--dim"):
    """Refuses a `dim` the encoder's embeddings cannot be cut to (0, negative, above its output size) and warns
    (TruncationWarning) when its model was not trained for it: an HPD config.json's `matryoshka_dims`.
    `output_dim` defaults to what the encoder reports."""
    if output_dim is None:
        output_dim = encoder.get_embedding_dimension()
    config = getattr(encoder, "config", None)  # an exported graph's encoder holds config.json as a dict
    if not isinstance(config, dict):  # a SentenceTransformer: its first module's model (HPDModel for HPD folders)
        model = getattr(encoder[0], "auto_model", None) if hasattr(encoder, "__getitem__") else None
        config = vars(getattr(model, "config", None) or object())
    warning = truncation_warning(dim, output_dim, config.get("matryoshka_dims"), name)
    if warning:
        warnings.warn(warning, TruncationWarning, stacklevel=2)


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
    module = Transformer(str(output_dir), model_kwargs=remote, config_kwargs=remote, processor_kwargs=remote,
                         modality_config={"text": {"method": "forward", "method_output_name": "sentence_embedding"}},
                         module_output_name="sentence_embedding")
    with tempfile.TemporaryDirectory() as scratch:
        SentenceTransformer(modules=[module], similarity_fn_name="cosine").save(scratch, create_model_card=False)
        for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
            shutil.copy(Path(scratch) / name, output_dir / name)
    drop_builder_settings(output_dir)
    return output_dir


def drop_builder_settings(folder):
    """Removes BUILDER_SETTINGS from the folder's tokenizer configs, so its files do not depend on where it was built."""
    for path in Path(folder).rglob("tokenizer_config.json"):
        config = _read_json(path)
        if any(key in config for key in BUILDER_SETTINGS):
            kept = {key: value for key, value in config.items() if key not in BUILDER_SETTINGS}
            path.write_text(json.dumps(kept, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --- batched encoding ----------------------------------------------------------------------------------------

def encode_by_length(encoder, sentences, batch_size=64, show_progress_bar=True):
    """Embeddings of `sentences` (float32, input order), encoded in groups of equal token count.

    Equal-length batches carry no padding: about a quarter faster on CPU than length-sorted batches."""
    from tqdm.auto import tqdm

    lengths = encoder.preprocess(list(sentences))["attention_mask"].sum(1).tolist() if len(sentences) else []
    groups = defaultdict(list)
    for index, length in enumerate(lengths):
        groups[length].append(index)
    embeddings = None
    with tqdm(total=len(sentences), desc="Encoding", unit="sent", disable=not show_progress_bar) as bar:
        for length in sorted(groups):
            indices = groups[length]
            vectors = encoder.encode([sentences[i] for i in indices], batch_size=batch_size,
                                     convert_to_numpy=True, show_progress_bar=False)
            if not np.isfinite(vectors).all():
                raise ValueError("the model produced NaN or infinite embeddings (e.g. from float16 overflow or "
                                 "broken weights); check the model or load it in float32.")
            if embeddings is None:
                embeddings = np.empty((len(sentences), vectors.shape[1]), dtype=np.float32)
            embeddings[indices] = vectors
            bar.update(len(indices))
    return embeddings


def encode_distinct(encoder, sentences, batch_size=64, show_progress_bar=True):
    """{sentence: vector} for every distinct sentence, each encoded once."""
    distinct = list(dict.fromkeys(sentences))
    return dict(zip(distinct, encode_by_length(encoder, distinct, batch_size, show_progress_bar)))


def _check_sentence_transformers_folder(folder):
    """Finds what sentence-transformers would fail on obscurely, and says it in one line."""
    modules = _read_json(folder / "modules.json")
    if not modules or not str(modules[0].get("type", "")).endswith("Transformer"):
        raise ValueError(f"{folder}/modules.json: the first module must be a Transformer; HPD needs a transformer encoder.")
    transformer_dir = folder / modules[0].get("path", "")
    encoder_config = _read_json(transformer_dir / "config.json")
    if encoder_config.get("model_type") != "bert":
        raise ValueError(f"{folder}: the encoder is model_type {encoder_config.get('model_type')!r}; HPD supports "
                         "BERT-family encoders (model_type 'bert', e.g. BERT, TinyBERT, MiniLM).")
    _require_weights(transformer_dir, "Transformer module")
    for module in modules[1:]:
        kind, module_dir = str(module.get("type", "")).rsplit(".", 1)[-1], folder / module.get("path", "")
        if kind == "Dense":
            _require_weights(module_dir, "Dense module")
            in_features = _read_json(module_dir / "config.json").get("in_features")
            if in_features != encoder_config.get("hidden_size"):
                raise ValueError(f"{module_dir}: Dense in_features is {in_features} but the encoder's hidden size "
                                 f"is {encoder_config.get('hidden_size')}: the Dense layer belongs to another encoder.")
    return modules


def _require_weights(folder, what):
    if not any((Path(folder) / name).is_file() for name in WEIGHT_FILES):
        raise FileNotFoundError(f"{folder}: no weights file for the {what} (expected model.safetensors or "
                                "pytorch_model.bin); the download or copy is incomplete.")


def _read_json(path, missing_ok=False):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise FileNotFoundError(f"{path}: missing; the model folder is incomplete.") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}).") from None
