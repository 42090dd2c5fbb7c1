"""`hpd release`: the folder that goes to the Hub, its model card, the checks it must pass, and the push.

A release folder is an HPD folder (weights, config with `auto_map`, the two remote-code files, tokenizer,
sentence-transformers files) plus README.md rendered from the repo's `model_card.md`, and, when known,
`distill_config.json`, the evaluation results and the MTEB submission files.
"""

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from jinja2 import Environment, meta

from hpd_toolkit.eval.sts import PUBLISHED, TASK_TABLE, TASKS
from hpd_models import load_error, load_hpd, resolve, save_hpd_folder
from hpd_inference import weights_sha256
from hpd_toolkit.training.hub_push import check_repo_id
from hpd_toolkit.training.output_dir import replace_folder

TEMPLATE = Path(__file__).resolve().parent.parent / "model_card.md"
REQUIRED_FILES = ("model.safetensors", "config.json", "configuration_hpd.py", "modeling_hpd.py", "tokenizer.json",
                  "tokenizer_config.json", "modules.json", "sentence_bert_config.json", "README.md")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


EXPORTS = ("onnx", "openvino")


def parse_exports(text):
    """'onnx,openvino' -> ("onnx", "openvino"); unknown names are an error."""
    names = tuple(dict.fromkeys(n.strip() for n in (text or "").split(",") if n.strip()))
    unknown = [n for n in names if n not in EXPORTS]
    if unknown:
        raise ValueError(f"--export {text!r}: unknown format {', '.join(unknown)}; choose from {', '.join(EXPORTS)} "
                         "(comma-separated).")
    return names


def build_release(model, out, repo_id, results_files=(), mteb_results=None, license="apache-2.0", base_model=None,
                  template=TEMPLATE, weights_dtype="float32", overwrite=False, trust_remote_code=False, exports=()):
    """Writes the release folder `out` for `model` (HPD or sentence-transformers folder, or Hub id).

    Returns (out, the embeddings of the card's examples that both loaders must reproduce). With
    `weights_dtype="float16"` the weights are stored in half precision and still computed in float32.
    `out` is replaced only when complete, and only if empty, missing or an earlier hpd output (or `overwrite`);
    it may not hold, or lie inside, the model or the results it is built from. `exports` ("onnx", "openvino") adds
    the graphs of `hpd export` (ONNX: float32 and int8-dynamic; OpenVINO: float32), made from the released weights."""
    check_repo_id(repo_id, "--repo-id")
    exports = parse_exports(",".join(exports)) if not isinstance(exports, str) else parse_exports(exports)
    source = resolve(model)
    if not any(any(source.rglob(name)) for name in TOKENIZER_FILES):
        raise FileNotFoundError(f"{source} has no tokenizer (tokenizer.json or vocab.txt); copy the tokenizer files "
                                "of the model's base into it.")
    results = [load_results(path, source) for path in results_files]
    inputs = [source, *results_files, *([mteb_results] if mteb_results is not None else [])]
    with replace_folder(out, overwrite=overwrite, sources=inputs) as folder:  # becomes `out` once complete
        hpd_model, tokenizer = load_hpd(source, trust_remote_code)
        save_hpd_folder(hpd_model, tokenizer, folder, weights_dtype=weights_dtype)
        exported = []
        for format in exports:  # from the folder's own weights (float16-rounded with --weights-dtype float16)
            from hpd_toolkit.training.export import export

            exported += export(folder, format=format, quantize="int8-dynamic" if format == "onnx" else "none",
                               progress=lambda message: None)
        distill_config = None
        if (source / "distill_config.json").is_file():
            shutil.copy(source / "distill_config.json", folder / "distill_config.json")
            distill_config = json.loads((source / "distill_config.json").read_text())
        for path, _ in results:
            (folder / "results").mkdir(exist_ok=True)
            shutil.copy(path, folder / "results" / Path(path).name)
        if base_model is None:  # the distilled student's base, when it is a Hub id (a local path is no base_model)
            student = (distill_config or {}).get("student") or ""
            base_model = student if student.count("/") == 1 and not Path(student).exists() else None
        card = render_card(hpd_model, repo_id, [r for _, r in results], distill_config, license, base_model, template,
                           exported)
        (folder / "README.md").write_text(card, encoding="utf-8")
        if mteb_results is not None:  # after the card: the ModelMeta takes language, licence and base model from it
            prepare_mteb_submission(mteb_results, folder, repo_id, source, template)
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
    variant = (results.get("backend", "torch"), results.get("precision", "float32"))
    if variant != ("torch", "float32"):
        raise ValueError(f"{path} scored the model through {variant[0]} at {variant[1]} precision; the card "
                         f"reports the model itself: evaluate it with `hpd eval sts --model {model_folder} --output "
                         "...` (no --backend or --precision).")
    if not scores or any(task not in (*TASKS, "Avg") for task in scores):
        raise ValueError(f"{path}: unexpected tasks in scores ({', '.join(scores)}).")
    truncated = results.get("truncate_dim")
    trained = matryoshka_dims(model_folder)
    if truncated is not None and truncated not in (trained or ()):
        raise ValueError(f"{path} scored the model's first {truncated} dimensions, a size it was not trained for "
                         f"({', '.join(map(str, trained)) if trained else 'it records no matryoshka_dims'}); the card "
                         "reports trained sizes only: leave this file out or evaluate with --dim at a trained size.")
    return path, {"protocol": protocol, "scores": scores, "embedding_dim": results.get("embedding_dim")}


def matryoshka_dims(folder):
    """The sizes an HPD folder's model was trained to be truncated to (config.json), or None."""
    config = Path(folder) / "config.json"
    return json.loads(config.read_text(encoding="utf-8")).get("matryoshka_dims") if config.is_file() else None


def result_labels(task, result, matryoshka):
    """(dataset name, metric name) of a score in the model-index. A Matryoshka model's dataset entry holds a metric
    per size, named by its size (the Hub groups entries by dataset, whatever their names)."""
    size = f", first {result['embedding_dim']} dimensions" if matryoshka else ""
    return f"{task} ({result['protocol']} protocol)", f"Spearman (cosine) x 100, {result['protocol']} protocol{size}"


def example_sentences(template=TEMPLATE):
    """The sentence-similarity widget of the model card template: source sentence, then the others."""
    widget = ModelCard(Path(template).read_text(encoding="utf-8")).data.get("widget")
    if not widget:
        raise ValueError(f"the model card template {template} has no sentence-similarity widget in its front matter")
    return [widget[0]["source_sentence"], *widget[0]["sentences"]]


def render_card(model, repo_id, results, distill_config, license, base_model, template=TEMPLATE, exported=()):
    """README.md by huggingface_hub's ModelCard.from_template: the template's front matter plus license, base_model
    and model-index make its ModelCardData, and jinja2 fills in the template's body.

    Sections without data (results, training) are left out; nothing is guessed."""
    layout = ModelCard(Path(template).read_text(encoding="utf-8"))  # .data: front matter, .text: jinja2 body
    config, matryoshka = model.config, model.config.matryoshka_dims
    eval_results = [
        EvalResult(task_type="STS", task_name="Semantic Textual Similarity", dataset_type=TASK_TABLE[task].dataset,
                   dataset_name=dataset_name, dataset_split="test", metric_type="cosine_spearman", metric_value=score,
                   metric_name=metric_name)
        for result in results for task, score in result["scores"].items() if task != "Avg"
        for dataset_name, metric_name in [result_labels(task, result, matryoshka)]
    ]
    card_data = ModelCardData(**layout.data.to_dict(), license=license, base_model=base_model, model_name=repo_id,
                              eval_results=eval_results or None)
    parameters = sum(p.numel() for p in model.parameters())
    projection = (f"Dense {config.hidden_size} → {config.embedding_dim} + {config.projection_activation}"
                  if config.embedding_dim else "none") + (", L2-normalised" if config.normalize else "")
    fields = dict(
        model_name=repo_id.split("/")[1], repo_id=repo_id, pooling=config.pooling,
        embedding_dim=config.projection_dim, bytes_per_embedding=4 * config.projection_dim,
        parameters=f"{parameters / 1e6:.1f}M ({parameters:,})", layers=config.num_hidden_layers,
        hidden_size=config.hidden_size, projection=projection, max_seq_length=config.max_seq_length,
        base_model=base_model, examples=example_sentences(template),
        results=[{"protocol": protocol, "table": results_table([r for r in results if r["protocol"] == protocol],
                                                                repo_id, matryoshka)}
                 for protocol in dict.fromkeys(r["protocol"] for r in results)],
        matryoshka=matryoshka,
        training=training_rows(distill_config) if distill_config else None,
        normalize=config.normalize, onnx=[name for name in exported if name.endswith(".onnx")],
        openvino=[name for name in exported if name.endswith(".xml")],
    )
    # from_template renders with jinja2's lenient Undefined, where a misspelt name would leave a silent hole
    unknown = meta.find_undeclared_variables(Environment().parse(layout.text)) - {*fields, *card_data.to_dict()}
    if unknown:
        raise ValueError(f"{template} uses {', '.join(sorted(unknown))}, which the model card does not define.")
    # jinja2 drops a template's final newline; the extra one keeps the template's own
    return str(ModelCard.from_template(card_data, template_str=f"---\n{{{{ card_data }}}}\n---\n{layout.text}\n",
                                       **fields))


def results_table(results, repo_id, matryoshka=None):
    """One protocol's results: a row per results file (a Matryoshka model's rows name their size, largest first)."""
    if matryoshka:
        results = sorted(results, key=lambda r: -r["embedding_dim"])
    tasks = [t for t in TASKS if any(t in r["scores"] for r in results)]
    lines = ["| model | " + " | ".join(TASK_TABLE[t].column for t in tasks) + " | Avg |",
             "|---" * (len(tasks) + 2) + "|"]
    for result in results:
        name = f"**{repo_id.split('/')[1]}**" + (f", first {result['embedding_dim']} dimensions" if matryoshka else "")
        lines.append(f"| {name} | " + " | ".join(f"{result['scores'][t]:.2f}" if t in result["scores"] else "–"
                                                for t in tasks) + f" | {result['scores']['Avg']:.2f} |")
    if results[0]["protocol"] == "senteval" and len(tasks) == len(TASKS):
        lines += [f"| {name} (published) | " + " | ".join(f"{v:.2f}" for v in values) + " |"
                  for name, values in PUBLISHED.items()]
    return "\n".join(lines)


def training_rows(distill_config):
    """The card's training table. A model trained on from another hpd distill output (`continues`) gets one block
    per run, oldest first: the first run in full, each later one with only what it changed."""
    stages = [distill_config]
    while "continues" in stages[0]:
        stages.insert(0, stages[0]["continues"])
    if len(stages) == 1:
        return run_rows(distill_config)
    rows, before = [], {}
    for number, stage in enumerate(stages, 1):
        current = dict(run_rows(stage))
        if number > 1:
            current["student base"] = f"the model of run {number - 1}"
        rows += [(f"run {number}: {name}", value) for name, value in current.items() if before.get(name) != value]
        before = current
    return rows


def run_rows(distill_config):
    settings, corpus = distill_config["settings"], distill_config["corpus"]
    teachers, weights = distill_config["teacher"], distill_config.get("teacher_weights")
    several = isinstance(teachers, list)  # L2-normalised, weighted, joined before the projection
    if several:
        teachers = " + ".join(f"{t} (weight {w:g})" for t, w in zip(teachers, weights or [1.0] * len(teachers)))
    rows = [("teachers" if several else "teacher", teachers), ("student base", distill_config["student"]),
            ("student layers kept", ",".join(map(str, settings["layers"])) if settings.get("layers") else "all"),
            ("projection", f"{settings['projection']} to {settings['dim']} dimensions"),
            *([("Matryoshka sizes", f"{', '.join(map(str, settings['matryoshka_dims']))} (the loss weighs each "
                                    f"prefix's MSE by {', '.join(f'{w:g}' for w in settings['matryoshka_weights'])})")]
              if settings.get("matryoshka_dims") else []),
            ("corpus", f"{corpus['train']:,} training and {corpus['valid']:,} validation sentences "
                       f"(sha256 {corpus['sha256'][:12]}…)"),
            ("PCA fitted on", f"{settings['pca_sentences']:,} teacher vectors"
                              + (f" (those of at least {settings['pca_min_words']} words only)"
                                 if settings.get("pca_min_words") else "")),
            ("optimisation", f"AdamW, lr {settings['lr']}, batch {settings['batch_size']}, "
                             f"{settings['warmup_steps']} warm-up steps, {settings['epochs']} "
                             f"epoch{'s' if settings['epochs'] != 1 else ''}, seed {settings['seed']}"),
            ("head initialisation", {"lstsq": "least squares from the student's pooled embeddings (linear probe)"}
             .get(settings.get("head_init", "random"), "random")),
            ("checkpoint selected by", distill_config.get("selection")
             or f"{distill_config['selected_by']} (step {distill_config['best_step']})")]
    if settings.get("unit", "sentence") != "sentence":
        rows.insert(4, ("training text", {"paragraph": "passages", "mixed": "sentences and passages"}[settings["unit"]]))
    rows += [(name.replace("_", " "), f"{value:.6g}") for name, value in (distill_config.get("validation") or {}).items()]
    return rows


# --- the MTEB leaderboard submission ----------------------------------------------------------------
# It lives in `<release>/mteb/`, beside the release and never pushed to the Hub: the results must be filed
# under the Hub commit that holds the weights, which exists only once the push is done.

SUBMISSION_DIR = "mteb"
NOT_PUSHED = (f"{SUBMISSION_DIR}/*",)  # push_folder's ignore_patterns for a release folder
UNPUSHED_REVISION = "no_revision_available"  # mteb's own name for an unknown revision
MAX_RESULT_BYTES = 10 * 1024 * 1024  # the results repository refuses bigger files
# ModelMeta fields no release knows; each line says where the submitter finds the value
UNKNOWABLE = {
    "public_training_code": "a URL of the code that trained the model (this toolkit's repository, if public)",
    "public_training_data": "a URL of the distillation corpus, if it is public",
    "contacts": "GitHub handles of the people to ask about the model",
}


def prepare_mteb_submission(mteb_results, out, repo_id, source, template=TEMPLATE):
    """`hpd eval mteb` output -> `out/mteb/`: the results-repository layout under the repo id (task files and
    model_meta.json), the ModelMeta source, the provenance record and SUBMITTING.md, all under the revision
    UNPUSHED_REVISION and marked not ready until `finish_mteb_submission` names the pushed commit."""
    from hpd_toolkit.eval.mteb_eval import read_provenance, write_provenance

    runs = [p for p in Path(mteb_results).glob("*/*") if p.is_dir() and any(p.glob("*.json"))]
    if len(runs) != 1:
        raise ValueError(f"{mteb_results} should hold one `hpd eval mteb` run (<org>__<name>/<revision>/); "
                         f"found {len(runs)}: pass one run's --output-folder.")
    tasks = sorted(p for p in runs[0].glob("*.json") if p.name != "model_meta.json")
    if not tasks:
        raise ValueError(f"{runs[0]} holds no task result files; run `hpd eval mteb` into it first.")
    provenance = read_provenance(runs[0])
    other_model = sorted(p.stem for p in tasks if (provenance.get(p.stem) or {}).get("model_sha256")
                         not in (None, weights_sha256(source)))
    if other_model:
        raise ValueError(f"{runs[0]} holds results of another model than {source} ({', '.join(other_model)}, "
                         f"scored on {provenance[other_model[0]]['model']}): run `hpd eval mteb --model {source}`.")
    target = out / SUBMISSION_DIR / "results" / repo_id.replace("/", "__") / UNPUSHED_REVISION
    target.mkdir(parents=True)
    for path in tasks:
        shutil.copy(path, target / path.name)
    write_provenance(out / SUBMISSION_DIR, {p.stem: provenance[p.stem] for p in tasks if p.stem in provenance})
    _write_submission(out, repo_id, UNPUSHED_REVISION, template=template)


def finish_mteb_submission(out, repo_id, pushed, template=TEMPLATE):
    """After the push: files the results under the pushed commit (folder name, ModelMeta, model_meta.json), with
    the push's date and visibility, checks them, and marks the submission ready. Returns the results folder."""
    import datetime

    results = out / SUBMISSION_DIR / "results" / repo_id.replace("/", "__")
    (run,) = [p for p in results.iterdir() if p.is_dir()]
    folder = results / pushed.commit_sha
    if run != folder:
        os.replace(run, folder)
    release_date = datetime.datetime.now(datetime.timezone.utc).date().isoformat()  # the day of the pushed commit
    _write_submission(out, repo_id, pushed.commit_sha, release_date=release_date, open_weights=not pushed.private,
                      template=template, ready=False)
    problems, pending = check_mteb_submission(out)
    if problems or pending:
        raise ValueError(f"pushed {pushed.url}, but the MTEB submission in {out / SUBMISSION_DIR} failed its check: "
                         f"{'; '.join(problems or [pending])}.")
    _write_submission(out, repo_id, pushed.commit_sha, release_date=release_date, open_weights=not pushed.private,
                      template=template, ready=True)
    return folder


def _write_submission(out, repo_id, revision, release_date=None, open_weights=None, template=TEMPLATE, ready=False):
    from hpd_toolkit.eval.mteb_eval import META_IMPORTS, _variable_name

    meta, notes, unknown = submission_model_meta(out, repo_id, revision, release_date, open_weights, template)
    root = out / SUBMISSION_DIR
    run = root / "results" / meta.model_name_as_path() / revision
    # the same model_meta.json that mteb's ResultCache writes beside the results it saves
    (run / "model_meta.json").write_text(json.dumps(meta.to_dict(), default=str, indent=4), encoding="utf-8")
    header = (f'"""ModelMeta of {repo_id} for a pull request to mteb (mteb/models/model_implementations/), written '
              'by `hpd release`.\n\nFields left None or incomplete are listed in SUBMITTING.md.\n"""\n\n')
    comments = "".join(f"# {line}\n" for line in notes)
    (root / "model_meta.py").write_text(
        f"{header}{META_IMPORTS}\n{comments}{_variable_name(meta.name)} = {meta.to_python()}\n", encoding="utf-8")
    (root / "SUBMITTING.md").write_text(_submitting(repo_id, meta, unknown, ready), encoding="utf-8")


def submission_model_meta(out, repo_id, revision, release_date=None, open_weights=None, template=TEMPLATE):
    """(mteb ModelMeta, comment lines for its source, {field: what to fill in} for fields left None or incomplete).

    Filled from the release folder `out`: the model (sizes, dimension, similarity), its card (language, licence,
    base model, read as mteb reads a Hub card), distill_config.json (training data), the template's citation."""
    from mteb.languages.iso_mappings import _hf_langs_to_iso_lang_scripts
    from mteb.models import ModelMeta
    from mteb.models.model_meta import _get_source_model

    from hpd_toolkit.eval.mteb_eval import _model_meta
    from hpd_models import load_encoder
    from hpd_toolkit.training.hub_push import hub_endpoint

    card = ModelCard.load(out / "README.md").data
    distill_config = json.loads((out / "distill_config.json").read_text()) if (out / "distill_config.json").is_file() \
        else None
    datasets, notes, incomplete = training_datasets(distill_config)
    meta = _model_meta(str(out), load_encoder(str(out)), repo_id)
    fields = {**meta.model_dump(), "revision": revision, "release_date": release_date, "open_weights": open_weights,
              "license": card.license if card.license != "other" else None,  # as mteb reads a Hub card
              "languages": _hf_langs_to_iso_lang_scripts(card.language), "adapted_from": _get_source_model(card),
              "reference": f"{hub_endpoint()}/{repo_id}", "citation": citation(template),
              "training_datasets": datasets,
              # an HPD folder loads with transformers' AutoModel too, and holds safetensors weights
              "framework": [*meta.framework, *(f for f in ("Transformers", "safetensors") if f not in meta.framework)]}
    meta = ModelMeta.model_validate(fields)  # model_copy would skip mteb's validation
    unknown = {name: why for name, why in UNKNOWABLE.items() if getattr(meta, name) is None}
    if revision == UNPUSHED_REVISION:
        unknown.update(revision="the Hub commit of the weights: push with `hpd release ... --push`",
                       release_date="the day of that commit (filled in by the push)",
                       open_weights="the repository's visibility (filled in by the push)")
    for name in ("license", "languages", "adapted_from", "citation"):
        if getattr(meta, name) is None:
            unknown[name] = {"adapted_from": "the Hub id of the student's base model: pass --base-model",
                             "languages": "the card template's `language`, as an ISO code"}.get(name, "see the card")
    if incomplete:
        unknown["training_datasets"] = incomplete
    if open_weights is False:
        unknown["open_weights"] = ("the repository is private: make it public on the Hub (then open_weights=True) "
                                   "so that the leaderboard can load the model")
    return meta, notes, unknown


def training_datasets(distill_config):
    """(mteb names of the MTEB datasets used, comment lines saying what was used, what is missing or None).

    Following mteb's own model files: a set used for training or model selection counts, and a distilled
    model carries its teacher's training datasets; data that is no MTEB task is named in a comment."""
    import mteb

    if distill_config is None:
        return None, [], "hpd has no distill_config.json for this model, so its training data are unknown: fill them in"
    settings = distill_config.get("settings") or {}
    names, notes, unknown_teachers = set(), [], []
    if settings.get("sts_dev"):
        names.add("STSBenchmark")
        notes.append(f"STSBenchmark: its dev split was scored at each evaluation during distillation (the checkpoint "
                     f"was selected by {distill_config.get('selected_by')}).")
    teachers = distill_config.get("teacher")
    for teacher in [teachers] if isinstance(teachers, str) else list(teachers or []):
        try:
            teacher_datasets = mteb.get_model_meta(teacher, fetch_from_hf=False).training_datasets
        except (KeyError, ValueError):  # a local folder or a model mteb does not list
            teacher_datasets = None
        if teacher_datasets is None:
            unknown_teachers.append(teacher)
        else:
            names |= set(teacher_datasets)
            notes.append(f"Distilled from {teacher}: its training datasets, as mteb lists them.")
    corpus = distill_config.get("corpus") or {}
    if corpus:
        paths = settings.get("corpus") or []
        notes.append(f"Not in MTEB: the distillation corpus, {corpus.get('train', 0):,} training and "
                     f"{corpus.get('valid', 0):,} validation sentences (sha256 {str(corpus.get('sha256'))[:12]}...)"
                     + (f" from {', '.join(map(str, paths))}" if paths else "") + ".")
    incomplete = None
    if unknown_teachers:
        incomplete = (f"add the training datasets of the teacher {', '.join(unknown_teachers)} (a local folder or a "
                      "model mteb does not list, so hpd cannot tell them; a distilled model carries its teacher's)")
        notes.append(f"Incomplete: {incomplete}.")
    return names, notes, incomplete


def citation(template=TEMPLATE):
    """The BibTeX entry of the card template's Citation section (the HPD paper)."""
    match = re.search(r"```bibtex\n(.*?)```", Path(template).read_text(encoding="utf-8"), re.S)
    return match.group(1) if match else None


def _submitting(repo_id, meta, unknown, ready):
    import mteb

    results = f"results/{meta.model_name_as_path()}/{meta.revision}"
    status = (f"**Ready.** Checked by `hpd release` with mteb {mteb.__version__}: the ModelMeta imports and "
              "validates, every result file loads with mteb's result loader under its own task name, every score is "
              "finite, no file is over 10 MB, and every task was scored on MTEB's own data." if ready else
              f"**Not ready.** {repo_id} is not pushed yet, so the revision the results must be filed under (the Hub "
              f"commit of the weights) is unknown and the folder is named `{UNPUSHED_REVISION}`. Run the same "
              "`hpd release` command again with `--push`: the pushed commit becomes the revision, and the push's "
              "date and visibility fill in `release_date` and `open_weights`.")
    todo = "".join(f"- `{name}`: {why}\n" for name, why in unknown.items()) or "- nothing\n"
    return f"""# Submitting {repo_id} to the MTEB leaderboard

{status}

This folder is kept beside the release and is not pushed to the Hub:
- `{results}/`: one mteb result file per task and `model_meta.json`, in the layout of the results repository;
- `model_meta.py`: the model's `ModelMeta`, for mteb's `mteb/models/model_implementations/`;
- `hpd_provenance.jsonl`: where each task's data came from (for the check; not part of either pull request).

Once ready:
1. Open a pull request to https://github.com/embeddings-benchmark/mteb adding `model_meta.py` to
   `mteb/models/model_implementations/`, with the fields below filled in.
2. Open a pull request to https://github.com/embeddings-benchmark/results copying `{results}/`
   to the same path in that repository.

Fields hpd cannot fill in (left `None`, or incomplete):
{todo}
Only results scored on MTEB's own data belong in the results repository: `hpd eval mteb` without `--data`,
on a machine with the Hub, produces them; results fed from local files that differ from MTEB's datasets
are refused here.
"""


def check_mteb_submission(folder, trust_remote_code=False):
    """(problems, why it is not ready yet or None) of the MTEB submission in `folder/mteb`, checked with mteb itself.

    The ModelMeta source imports and validates (mteb's pydantic model) and names the results folder and revision;
    model_meta.json validates and agrees with it; every task file loads with mteb's result loader, its task_name
    is its file name, every score mteb expects for the task is there and finite, no file is over 10 MB, and every
    task was scored on MTEB's own data (hpd_provenance.jsonl). Not ready: the revision is no Hub commit sha."""
    import mteb
    from mteb.models import ModelMeta
    from mteb.results import TaskResult

    from hpd_toolkit.eval.mteb_eval import read_provenance
    from hpd_toolkit.training.output_dir import MARKER

    root = Path(folder) / SUBMISSION_DIR
    runs = [p for p in (root / "results").glob("*/*") if p.is_dir()]
    if len(runs) != 1:
        return [f"{root}/results should hold one <org>__<name>/<revision>/ folder, not {len(runs)}: "
                "build the release again with --mteb-results"], None
    run, problems = runs[0], []

    meta = None
    if not (Path(folder) / MARKER).is_file() and not trust_remote_code:
        problems.append(f"{root}/model_meta.py was not written by hpd here, so it was not imported; pass "
                        "--trust-remote-code to import it")
    else:
        try:
            spec = importlib.util.spec_from_file_location("hpd_submission_model_meta", root / "model_meta.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)  # ModelMeta(...) validates as it is built
            metas = [value for value in vars(module).values() if isinstance(value, ModelMeta)]
            if len(metas) != 1:
                raise ValueError(f"it defines {len(metas)} ModelMeta objects, not one")
            meta = metas[0]
        except Exception as error:  # whatever mteb or Python objects to is the problem to report
            problems.append(f"{root}/model_meta.py does not import and validate as mteb's ModelMeta "
                            f"({_error_line(error)}): build the release again")
    if meta is not None and (meta.model_name_as_path(), meta.revision) != (run.parent.name, run.name):
        problems.append(f"model_meta.py names {meta.name} at revision {meta.revision} but the results are in "
                        f"{run.parent.name}/{run.name}: build the release again")
    try:
        saved = ModelMeta.model_validate_json_resolved((run / "model_meta.json").read_text(encoding="utf-8"))
        if meta is not None and _comparable(saved) != _comparable(meta):
            problems.append(f"{run.name}/model_meta.json disagrees with model_meta.py: build the release again")
    except FileNotFoundError:
        problems.append(f"{run}/model_meta.json is missing (the results repository requires it): build the release "
                        "again")
    except Exception as error:
        problems.append(f"{run}/model_meta.json does not validate as mteb's ModelMeta ({_error_line(error)})")

    provenance = read_provenance(root)
    tasks = sorted(p for p in run.glob("*.json") if p.name != "model_meta.json")
    if not tasks:
        problems.append(f"{run} holds no task result files: release with --mteb-results from `hpd eval mteb`")
    for path in tasks:
        try:
            result = TaskResult.from_disk(path)
        except Exception as error:
            problems.append(f"{path.name} does not load with mteb's TaskResult loader ({_error_line(error)})")
            continue
        if result.task_name != path.stem:
            problems.append(f"{path.name} holds the results of task_name {result.task_name!r}, not {path.stem!r}: "
                            "restore the file from `hpd eval mteb`")
            continue
        try:
            task = mteb.get_task(result.task_name)
        except Exception:
            problems.append(f"{path.name}: mteb {mteb.__version__} has no task {result.task_name!r}; remove the file "
                            "or evaluate with an mteb that has the task")
            continue
        # mteb fills in NaN for every split and subset the task needs but the file lacks
        scores = result.validate_and_filter_scores(task).scores
        bad = [name for name, value in _numbers(scores) if not math.isfinite(value)]
        if bad:
            problems.append(f"{path.name}: the score {bad[0]} is NaN, infinite or missing: evaluate the model again "
                            "with `hpd eval mteb`")
        entry = provenance.get(path.stem)
        if entry is None:
            problems.append(f"{path.name}: no record of where its data came from ({root}/hpd_provenance.jsonl): "
                            "produce it with `hpd eval mteb`")
        elif entry.get("data") != "hub" and entry.get("differs_from_mteb"):
            problems.append(f"{path.stem} was scored on local data that differ from MTEB's "
                            f"({entry['differs_from_mteb']}, in {entry.get('data_dir')}), so it is refused for the "
                            "leaderboard: run `hpd eval mteb` without --data on a machine with the Hub")
    problems += [f"{path.relative_to(root)} is {path.stat().st_size / 2**20:.1f} MB, over the results repository's "
                 "10 MB limit: restore the file from `hpd eval mteb`" for path in sorted((root / "results").rglob("*"))
                 if path.is_file() and path.stat().st_size > MAX_RESULT_BYTES]
    pending = None if re.fullmatch(r"[0-9a-f]{40}", run.name) else (
        f"the results are filed under {run.name!r}, not a Hub commit: run the same `hpd release` command with --push")
    return problems, pending


def submission_status(folder, trust_remote_code=False):
    """(one line saying why the MTEB submission in `folder` is refused, or None; why it is not ready yet, or None).

    (None, None) when the folder holds no MTEB submission."""
    if not (Path(folder) / SUBMISSION_DIR).is_dir():
        return None, None
    problems, pending = check_mteb_submission(folder, trust_remote_code)
    return (f"the MTEB submission is refused: {'; '.join(problems)}" if problems else None), pending


def _comparable(meta):
    data = meta.to_dict()
    if data["training_datasets"] is not None:  # a set, listed in any order
        data["training_datasets"] = sorted(data["training_datasets"])
    return json.loads(json.dumps(data, default=str))


def _numbers(value, name=""):
    """(dotted name, number) of every number in a nested scores object."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{name}.{key}" if name else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _numbers(item, f"{name}[{index}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield name, float(value)


def _error_line(error):
    errors = getattr(error, "errors", None)
    if callable(errors):  # pydantic: the first field and message, not its multi-line report
        first = errors()[0]
        return f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
    return " ".join(f"{type(error).__name__}: {error}".split())


def check_release(folder, reference=None, atol=1e-6, template=TEMPLATE, trust_remote_code=False):
    """Problems with a release folder (empty when it is fit to push): files, card, and both loaders.

    Each loader runs in a fresh offline process; its embeddings of the card's example sentences must equal
    `reference` (default: HPDModel loaded here) within `atol`. The loaders run the folder's Python files,
    so those must be this toolkit's own unless `trust_remote_code`."""
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
        matryoshka = matryoshka_dims(folder)
        results = [json.loads(path.read_text()) for path in sorted((folder / "results").glob("*.json"))]
        expected = [(*result_labels(task, r, matryoshka), score) for r in results
                    for task, score in r["scores"].items() if task != "Avg"]
        found = [(e.dataset_name, e.metric_name, e.metric_value) for e in (card.data.eval_results or [])]
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
               if ours.get(path.name) != path.read_bytes() and SUBMISSION_DIR not in path.relative_to(folder).parts[:1]]
    if foreign and not trust_remote_code:
        return [*problems, (f"{', '.join(foreign)} is not this toolkit's code, so the loaders were not run; "
                            "pass --trust-remote-code to run it")]
    sentences = example_sentences(template)
    if reference is None:
        try:
            reference = modeling_hpd.HPDModel.from_pretrained(folder).encode(sentences)
        except Exception as error:  # damaged weights, weights that do not fit config.json, NaN...
            return [*problems, " ".join(str(load_error(folder, error)).split()).rstrip(".")]
    problems += _check_exported_graphs(folder, sentences, reference)
    for loader, embeddings in load_in_fresh_process(folder, sentences).items():
        if isinstance(embeddings, str):
            problems.append(f"{loader} cannot load the folder: {embeddings}")
        elif embeddings.shape != np.shape(reference) or np.abs(embeddings - reference).max() > atol:
            gap = np.abs(embeddings - reference).max() if embeddings.shape == np.shape(reference) else "shape"
            problems.append(f"{loader} gives other embeddings than the source model (max difference {gap})")
    return problems


def _check_exported_graphs(folder, sentences, reference):
    """Every ONNX / OpenVINO graph in the folder loads and gives the model's embeddings (float32: <= 1e-4; int8:
    cosine >= 0.95 on the card's examples)."""
    from hpd_inference import BACKENDS

    problems = []
    graphs = [("onnx", p) for p in sorted(folder.glob("onnx/*.onnx"))] + \
             [("openvino", p) for p in sorted(folder.glob("openvino/*.xml"))]
    for backend, path in graphs:
        name = path.relative_to(folder).as_posix()
        try:
            embeddings = BACKENDS[backend](folder, file_name=name).encode(sentences)
        except (ValueError, OSError) as error:
            problems.append(f"{name}: {' '.join(str(error).split()).rstrip('.')}")
            continue
        if "int8" in name:
            cosine = (embeddings * reference).sum(1) / np.linalg.norm(embeddings, axis=1) / np.linalg.norm(
                reference, axis=1)
            if cosine.min() < 0.95:
                problems.append(f"{name} gives embeddings with cosine {cosine.min():.3f} to the model's")
        elif np.abs(embeddings - reference).max() > 1e-4:
            problems.append(f"{name} gives other embeddings than the model (max difference "
                            f"{np.abs(embeddings - reference).max():.2g}); export it again")
    return problems


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
