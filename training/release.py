"""`hpd release`: the folder that goes to the Hub, its model card, the checks it must pass, and the push.

A release folder is an HPD folder (weights, config with `auto_map`, the two remote-code files, tokenizer,
sentence-transformers files) plus README.md rendered from the repo's `model_card.md`, and, when known,
`distill_config.json`, the evaluation results and the MTEB submission files.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

from eval.sts import COLUMNS, PUBLISHED, TASKS
from training.convert import load_error, load_hpd, resolve, save_hpd_folder, weights_sha256
from training.output_dir import replace_folder

TEMPLATE = Path(__file__).resolve().parent.parent / "model_card.md"
REQUIRED_FILES = ("model.safetensors", "config.json", "configuration_hpd.py", "modeling_hpd.py", "tokenizer.json",
                  "tokenizer_config.json", "modules.json", "sentence_bert_config.json", "README.md")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
MTEB_DATASETS = {"STS12": "mteb/sts12-sts", "STS13": "mteb/sts13-sts", "STS14": "mteb/sts14-sts",
                 "STS15": "mteb/sts15-sts", "STS16": "mteb/sts16-sts", "STSBenchmark": "mteb/stsbenchmark-sts",
                 "SICKRelatedness": "mteb/sickr-sts"}


def check_repo_id(repo_id):
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
        if repo_id.count("/") != 1:
            raise HFValidationError("needs exactly one '/'")
    except HFValidationError as error:
        raise ValueError(f"--repo-id {repo_id!r} is not a Hub model id of the form ORG/NAME ({error}).") from None


def build_release(model, out, repo_id, results_files=(), mteb_results=None, license="apache-2.0", base_model=None,
                  template=TEMPLATE, weights_dtype="float32", overwrite=False, trust_remote_code=False):
    """Writes the release folder `out` for `model` (HPD or sentence-transformers folder, or Hub id).

    Returns (out, the embeddings of the card's examples that both loaders must reproduce). With
    `weights_dtype="float16"` the weights are stored in half precision and still computed in float32.
    `out` is replaced only when complete, and only if empty, missing or an earlier hpd output (or `overwrite`);
    it may not hold, or lie inside, the model or the results it is built from."""
    check_repo_id(repo_id)
    source = resolve(model)
    if not any(any(source.rglob(name)) for name in TOKENIZER_FILES):
        raise FileNotFoundError(f"{source} has no tokenizer (tokenizer.json or vocab.txt); copy the tokenizer files "
                                "of the model's base into it.")
    results = [load_results(path, source) for path in results_files]
    inputs = [source, *results_files, *([mteb_results] if mteb_results is not None else [])]
    with replace_folder(out, overwrite=overwrite, sources=inputs) as folder:  # becomes `out` once complete
        hpd_model, tokenizer = load_hpd(source, trust_remote_code)
        save_hpd_folder(hpd_model, tokenizer, folder, weights_dtype=weights_dtype)
        distill_config = None
        if (source / "distill_config.json").is_file():
            shutil.copy(source / "distill_config.json", folder / "distill_config.json")
            distill_config = json.loads((source / "distill_config.json").read_text())
        for path, _ in results:
            (folder / "results").mkdir(exist_ok=True)
            shutil.copy(path, folder / "results" / Path(path).name)
        if mteb_results is not None:
            copy_mteb_results(mteb_results, folder, repo_id)
        if base_model is None:  # the distilled student's base, when it is a Hub id (a local path is no base_model)
            student = (distill_config or {}).get("student") or ""
            base_model = student if student.count("/") == 1 and not Path(student).exists() else None
        card = render_card(hpd_model, repo_id, [r for _, r in results], distill_config, license, base_model, template)
        (folder / "README.md").write_text(card, encoding="utf-8")
        reference = hpd_model.encode(example_sentences(template), tokenizer=tokenizer)
    return Path(out).expanduser().resolve(), reference


def load_results(path, model_folder):
    """An `hpd eval sts` results file, refused when it was produced by another model."""
    path = Path(path)
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
        scores, protocol = results["scores"], results["protocol"]
    except FileNotFoundError:
        raise FileNotFoundError(f"results file {path}: no such file.") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"{path} is not an `hpd eval sts --output` results file (no scores/protocol).") from None
    recorded = results.get("model_sha256")
    if recorded is None or recorded != weights_sha256(model_folder):
        raise ValueError(f"{path} was produced by another model ({results.get('model')}), not {model_folder}: "
                         f"evaluate this model with `hpd eval sts --model {model_folder} --output ...`.")
    if not scores or any(task not in (*TASKS, "Avg") for task in scores):
        raise ValueError(f"{path}: unexpected tasks in scores ({', '.join(scores)}).")
    return path, {"protocol": protocol, "scores": scores}


def example_sentences(template=TEMPLATE):
    """The sentence-similarity widget of the model card template: source sentence, then the others."""
    widget = front_matter(Path(template).read_text(encoding="utf-8"))[0]["widget"][0]
    return [widget["source_sentence"], *widget["sentences"]]


def front_matter(text):
    """(metadata dict, body) of a markdown file with YAML front matter."""
    if not text.startswith("---\n"):
        raise ValueError("the model card has no YAML front matter")
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header) or {}, body


def render_card(model, repo_id, results, distill_config, license, base_model, template=TEMPLATE):
    """README.md: template front matter + license, base_model, model-index; the body rendered by jinja2.

    Sections without data (results, training) are left out; nothing is guessed."""
    import jinja2
    from huggingface_hub import EvalResult, ModelCardData

    metadata, body = front_matter(Path(template).read_text(encoding="utf-8"))
    eval_results = [
        EvalResult(task_type="STS", task_name="Semantic Textual Similarity", dataset_type=MTEB_DATASETS[task],
                   dataset_name=f"{task} ({result['protocol']} protocol)", dataset_split="test",
                   metric_type="cosine_spearman", metric_value=score,
                   metric_name=f"Spearman (cosine) x 100, {result['protocol']} protocol")
        for result in results for task, score in result["scores"].items() if task != "Avg"
    ]
    card_data = ModelCardData(**metadata, license=license, base_model=base_model, model_name=repo_id,
                              eval_results=eval_results or None)
    config = model.config
    parameters = sum(p.numel() for p in model.parameters())
    projection = (f"Dense {config.hidden_size} → {config.embedding_dim} + {config.projection_activation}"
                  if config.embedding_dim else "none") + (", L2-normalised" if config.normalize else "")
    text = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True).from_string(body).render(
        model_name=repo_id.split("/")[1], repo_id=repo_id, pooling=config.pooling,
        embedding_dim=config.projection_dim, bytes_per_embedding=4 * config.projection_dim,
        parameters=f"{parameters / 1e6:.1f}M ({parameters:,})", layers=config.num_hidden_layers,
        hidden_size=config.hidden_size, projection=projection, max_seq_length=config.max_seq_length,
        base_model=base_model, examples=example_sentences(template),
        results=[{"protocol": r["protocol"], "table": results_table(r, repo_id)} for r in results],
        training=training_rows(distill_config) if distill_config else None,
    )
    return f"---\n{card_data.to_yaml()}\n---\n{text}"


def results_table(result, repo_id):
    tasks = [t for t in TASKS if t in result["scores"]]
    lines = ["| model | " + " | ".join(COLUMNS.get(t, t) for t in tasks) + " | Avg |",
             "|---" * (len(tasks) + 2) + "|",
             f"| **{repo_id.split('/')[1]}** | " + " | ".join(f"{result['scores'][t]:.2f}" for t in tasks)
             + f" | {result['scores']['Avg']:.2f} |"]
    if result["protocol"] == "senteval" and len(tasks) == len(TASKS):
        lines += [f"| {name} (published) | " + " | ".join(f"{v:.2f}" for v in values) + " |"
                  for name, values in PUBLISHED.items()]
    return "\n".join(lines)


def training_rows(distill_config):
    settings, corpus = distill_config["settings"], distill_config["corpus"]
    rows = [("teacher", distill_config["teacher"]), ("student base", distill_config["student"]),
            ("student layers kept", ",".join(map(str, settings["layers"])) if settings.get("layers") else "all"),
            ("projection", f"{settings['projection']} to {settings['dim']} dimensions"),
            ("corpus", f"{corpus['train']:,} training and {corpus['valid']:,} validation sentences "
                       f"(sha256 {corpus['sha256'][:12]}…)"),
            ("PCA fitted on", f"{settings['pca_sentences']:,} teacher vectors"),
            ("optimisation", f"AdamW, lr {settings['lr']}, batch {settings['batch_size']}, "
                             f"{settings['warmup_steps']} warm-up steps, {settings['epochs']} "
                             f"epoch{'s' if settings['epochs'] != 1 else ''}, seed {settings['seed']}"),
            ("head initialisation", {"lstsq": "least squares from the student's pooled embeddings (linear probe)"}
             .get(settings.get("head_init", "random"), "random")),
            ("checkpoint selected by", f"{distill_config['selected_by']} (step {distill_config['best_step']})")]
    rows += [(name.replace("_", " "), f"{value:.6g}") for name, value in (distill_config.get("validation") or {}).items()]
    return rows


def copy_mteb_results(mteb_results, out, repo_id):
    """`hpd eval mteb` output -> the embeddings-benchmark/results layout under the repo id, plus ModelMeta source."""
    from eval.mteb_eval import write_model_meta
    from eval.sts import load_encoder

    runs = [p for p in Path(mteb_results).glob("*/*") if p.is_dir() and any(p.glob("*.json"))]
    if len(runs) != 1:
        raise ValueError(f"{mteb_results} should hold one `hpd eval mteb` run (<org>__<name>/<revision>/); "
                         f"found {len(runs)}.")
    target = out / "mteb" / "results" / repo_id.replace("/", "__") / runs[0].name
    target.mkdir(parents=True)
    for path in runs[0].glob("*.json"):
        if path.name != "model_meta.json":
            shutil.copy(path, target / path.name)
    write_model_meta(str(out), load_encoder(str(out)), repo_id, out / "mteb" / "model_meta.py")
    (out / "SUBMITTING.md").write_text(SUBMITTING.format(repo_id=repo_id, folder=target.parent.relative_to(out)),
                                       encoding="utf-8")


SUBMITTING = """# Submitting {repo_id} to the MTEB leaderboard

1. Push this folder to the Hub (`hpd release ... --push`), so that `{repo_id}` loads for everyone.
2. Open a pull request to https://github.com/embeddings-benchmark/mteb adding the model's `ModelMeta`
   (`mteb/model_meta.py` here) to `mteb/models/model_implementations/`; fill in the fields left `None`
   (release date, training datasets, licence if not set).
3. Open a pull request to https://github.com/embeddings-benchmark/results copying `{folder}/`
   into that repository's `results/` folder (its layout is `results/<org>__<name>/<revision>/<Task>.json`).

Only submit results computed on the official task data: results fed from local copies that differ
from MTEB's (the local SICK.txt, for instance) do not belong in the results repository.
"""


def check_release(folder, reference=None, atol=1e-6, template=TEMPLATE, trust_remote_code=False):
    """Problems with a release folder (empty when it is fit to push): files, card, and both loaders.

    Each loader runs in a fresh offline process; its embeddings of the card's example sentences must equal
    `reference` (default: HPDModel loaded here) within `atol`. The loaders run the folder's Python files,
    so those must be this toolkit's own unless `trust_remote_code`."""
    from huggingface_hub import ModelCard

    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder}: no such folder"]
    problems = [f"missing {name}" for name in REQUIRED_FILES if not (folder / name).is_file()]
    if problems:
        return problems
    if "auto_map" not in json.loads((folder / "config.json").read_text()):
        problems.append("config.json has no auto_map: AutoModel cannot find the remote code")

    card_text = (folder / "README.md").read_text(encoding="utf-8")
    if any(marker in card_text for marker in ("{{", "}}", "{%", "%}")):
        problems.append("README.md still holds template placeholders")
    try:
        card = ModelCard(card_text)  # huggingface_hub's own parser, model-index included
        expected = [(f"{t} ({r['protocol']} protocol)", v) for r in _folder_results(folder)
                    for t, v in r["scores"].items() if t != "Avg"]
        found = [(e.dataset_name, e.metric_value) for e in (card.data.eval_results or [])]
        if sorted(found) != sorted(expected):
            problems.append(f"model-index holds {found} but the results files say {expected}")
        for key in ("license", "pipeline_tag", "library_name"):
            if not card.data.get(key):
                problems.append(f"the card's front matter has no {key}")
    except Exception as error:  # whatever the parser objects to is the problem to report
        problems.append(f"README.md front matter does not parse: {error}")

    import configuration_hpd
    import modeling_hpd

    ours = {Path(m.__file__).name: Path(m.__file__).read_bytes() for m in (configuration_hpd, modeling_hpd)}
    foreign = [path.relative_to(folder).as_posix() for path in sorted(folder.rglob("*.py"))
               if ours.get(path.name) != path.read_bytes()]
    if foreign and not trust_remote_code:
        return [*problems, (f"{', '.join(foreign)} is not this toolkit's code, so the loaders were not run; "
                            "pass --trust-remote-code to run it")]
    sentences = example_sentences(template)
    if reference is None:
        try:
            reference = modeling_hpd.HPDModel.from_pretrained(folder).encode(sentences)
        except Exception as error:  # damaged weights, weights that do not fit config.json, NaN...
            return [*problems, " ".join(str(load_error(folder, error)).split()).rstrip(".")]
    for loader, embeddings in load_in_fresh_process(folder, sentences).items():
        if isinstance(embeddings, str):
            problems.append(f"{loader} cannot load the folder: {embeddings}")
        elif embeddings.shape != np.shape(reference) or np.abs(embeddings - reference).max() > atol:
            gap = np.abs(embeddings - reference).max() if embeddings.shape == np.shape(reference) else "shape"
            problems.append(f"{loader} gives other embeddings than the source model (max difference {gap})")
    return problems


def _folder_results(folder):
    return [json.loads(p.read_text()) for p in sorted((folder / "results").glob("*.json"))] \
        if (folder / "results").is_dir() else []


LOADERS = {
    "AutoModel": "from transformers import AutoModel\n"
                 "embeddings = AutoModel.from_pretrained(folder, trust_remote_code=True).encode(sentences)",
    "SentenceTransformer": "from sentence_transformers import SentenceTransformer\n"
                           "embeddings = SentenceTransformer(folder, trust_remote_code=True).encode(sentences)",
}


def load_in_fresh_process(folder, sentences):
    """{loader: embeddings, or the error line} with each loader in its own offline interpreter."""
    out = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, code in LOADERS.items():
            target = Path(scratch) / f"{name}.npy"
            program = (f"import numpy as np\nfolder = {str(folder)!r}\nsentences = {sentences!r}\n{code}\n"
                       f"np.save({str(target)!r}, np.asarray(embeddings))")
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(Path(scratch) / "modules")}
            result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env)
            lines = result.stderr.strip().splitlines()
            out[name] = np.load(target) if result.returncode == 0 else (lines[-1] if lines else "failed")
    return out
