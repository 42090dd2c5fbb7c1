"""The `hpd` command. Each subcommand parses its flags here and calls one library function.

Bad input surfaces as ValueError or OSError with a message written for the user; the command
prints it as one line (set HPD_DEBUG=1 for the traceback).
"""

import argparse
import dataclasses
import os
import sys
import warnings
from pathlib import Path

from hpd_toolkit.eval.sts import TASK_TABLE, TASKS
from hpd_inference import PRECISIONS

# The project's default model: HPD distilled from all-mpnet-base-v2 into 4 layers of all-MiniLM-L6-v2 at 128-d
# (docs/reproduction.md). It ships with the repository; `hpd encode` and `hpd eval` use it when no model is given.
DEFAULT_MODEL = Path(__file__).resolve().parent / "releases" / "HPD-MiniLM-L4-F128"
ENCODE_CHUNK = 8192  # hpd encode encodes and writes this many sentences at a time


def model_or_default(model):
    if model is not None:
        return model
    if not (DEFAULT_MODEL / "config.json").is_file():
        raise FileNotFoundError(f"the default model {DEFAULT_MODEL} is missing (it ships with a clone of the "
                                "repository, not with a wheel); pass --model FOLDER_OR_HUB_ID.")
    return str(DEFAULT_MODEL)


def encode_command(args):
    import numpy as np

    from hpd_toolkit.eval.sts import utf8_error
    from hpd_models import check_truncation, encode_by_length, load_any_encoder

    if bool(args.sentences) == bool(args.input):
        raise ValueError("give the sentences either as arguments or with --input FILE (one per line, - for stdin).")
    if args.input:
        try:
            handle = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")
        except FileNotFoundError:
            raise FileNotFoundError(f"--input {args.input}: no such file.") from None
        with handle:
            try:
                sentences = [line.rstrip("\r\n") for line in handle]  # line i -> row i, blank lines included
            except UnicodeDecodeError as error:
                raise ValueError(f"--input {utf8_error(args.input, error)}") from None
    else:
        sentences = args.sentences
    if not any(sentence.strip() for sentence in sentences):
        raise ValueError(f"no sentences to encode in {args.input or 'the arguments'}.")
    from hpd_inference import check_precision, load_ranges, quantize

    check_precision(args.precision)
    model = model_or_default(args.model)
    encoder = load_any_encoder(model, args.backend, args.file_name, trust_remote_code=args.trust_remote_code)
    if args.dim is not None:
        check_truncation(encoder, args.dim)
    ranges = None
    if args.precision in ("int8", "uint8"):
        ranges = load_ranges(model, normalized=args.normalize, dim=args.dim)
    output = None
    if args.output:
        output = Path(args.output if args.output.endswith(".npy") else f"{args.output}.npy")  # np.save's own rule
        temporary = output.parent / f".{output.name}.{os.getpid()}.tmp.npy"
    stored = None
    try:
        # In chunks, each written as it is done: memory stays flat however long the input is.
        from tqdm.auto import tqdm

        with tqdm(total=len(sentences), desc="Encoding", unit="sent", disable=len(sentences) <= args.batch_size) as bar:
            for start in range(0, len(sentences), ENCODE_CHUNK):
                chunk = sentences[start : start + ENCODE_CHUNK]
                vectors = encode_by_length(encoder, chunk, batch_size=args.batch_size, show_progress_bar=False)
                if args.dim is not None:  # truncate first, then normalise, as sentence-transformers does
                    vectors = np.ascontiguousarray(vectors[:, : args.dim])
                if args.normalize:
                    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
                vectors = quantize(vectors, args.precision, ranges)
                if output is None:
                    np.savetxt(sys.stdout, vectors, fmt="%.6f" if args.precision == "float32" else "%d", delimiter=" ")
                else:
                    if stored is None:
                        stored = np.lib.format.open_memmap(temporary, mode="w+", dtype=vectors.dtype,
                                                           shape=(len(sentences), vectors.shape[1]))
                    stored[start : start + len(vectors)] = vectors
                bar.update(len(chunk))
        if stored is not None:
            stored.flush()
            shape, dtype = stored.shape, stored.dtype
            del stored
            os.replace(temporary, output)
    except BaseException:
        if output is not None and temporary.exists():
            temporary.unlink()
        raise
    if output is not None:
        packed = " (sign bits, 8 per byte)" if args.precision.endswith("binary") else ""
        print(f"Wrote {output}: {shape[0]} x {shape[1]} {dtype}{packed}", file=sys.stderr)


def convert_command(args):
    from hpd_toolkit.training.convert import convert

    output = convert(args.source, args.output, to=args.to, overwrite=args.overwrite,
                     trust_remote_code=args.trust_remote_code)
    print(f"Wrote {args.to} model folder: {output}")


def eval_sts_command(args):
    from hpd_toolkit.eval.sts import evaluate_sts, format_table, write_results

    results = evaluate_sts(model_or_default(args.model), args.data, protocol=args.protocol, tasks=args.tasks,
                           batch_size=args.batch_size, max_seq_length=args.max_seq_length,
                           trust_remote_code=args.trust_remote_code, backend=args.backend, file_name=args.file_name,
                           precision=args.precision, truncate_dim=args.dim)
    print(format_table(results, compare=args.compare))
    print(f"{results['distinct_sentences']} distinct sentences encoded at {results['sentences_per_s']} sentences/s; "
          f"{results['wall_seconds']} s in all")
    if args.output:
        write_results(results, args.output)
        print(f"Wrote {args.output}")


def export_command(args):
    from hpd_toolkit.training.export import export

    written = export(args.model, format=args.format, quantize=args.quantize, calibration=args.calibration,
                     target=args.target, overwrite=args.overwrite, calibration_sentences=args.calibration_sentences,
                     ffn_output=args.int8_ffn_output,
                     progress=lambda message: print(message, file=sys.stderr))
    folder = Path(args.model)
    for relative in written:
        graph = folder / relative
        size = sum(p.stat().st_size for p in (graph, graph.with_suffix(".bin")) if p.is_file())
        check = ("float32, checked against the PyTorch model: equal to 1e-4" if relative == written[0] else
                 "int8, checked against the PyTorch model: cosine >= 0.9 on test sentences")
        print(f"Wrote {folder / relative} ({size / 1e6:.1f} MB; {check})")
    print(f"Use it: hpd encode --model {folder} --backend {args.format}"
          + (f" --file-name {written[-1]}" if len(written) > 1 else "") + " ...")


def calibrate_command(args):
    from hpd_toolkit.training.export import calibrate

    path = calibrate(args.model, args.corpus, sentences=args.sentences, seed=args.seed, batch_size=args.batch_size,
                     trust_remote_code=args.trust_remote_code, progress=lambda message: print(message, file=sys.stderr))
    print(f"Wrote {path}: int8/uint8 ranges for --precision int8|uint8")


def eval_mteb_command(args):
    from hpd_toolkit.eval.mteb_eval import run_mteb

    if args.name is not None:
        from hpd_toolkit.training.hub_push import check_repo_id

        check_repo_id(args.name, "--name")

    result = run_mteb(model_or_default(args.model), args.tasks, args.output_folder, data_dir=args.data,
                      batch_size=args.batch_size, name=args.name, trust_remote_code=args.trust_remote_code)
    width = max(len(task) for task in result["scores"])
    for task, score in result["scores"].items():
        print(f"{task:<{width}}  {score:6.2f}")
    print(f"Results: {result['results_folder']}\nModelMeta source: {result['model_meta_file']}")
    for task, difference in result["differs_from_mteb"].items():
        print(f"Note: the local data of {task} differ from MTEB's ({difference}), so `hpd release` will not submit "
              "this result; run without --data on a machine with the Hub for the leaderboard.")


def eval_retrieval_command(args):
    from hpd_toolkit.eval.retrieval import evaluate_retrieval, format_report
    from hpd_toolkit.eval.sts import write_results

    results = evaluate_retrieval(model_or_default(args.model), args.data, index_type=args.index,
                                 precision=args.precision, rescore=args.rescore, ef_search=args.ef_search,
                                 cache_dir=args.cache_dir, batch_size=args.batch_size,
                                 trust_remote_code=args.trust_remote_code, backend=args.backend,
                                 file_name=args.file_name)
    print(format_report(results))
    if args.output:
        write_results(results, args.output)
        print(f"Wrote {args.output}")


def distill_settings(args):
    """The DistillConfig keywords of parsed `hpd distill` arguments: its --config file's, overridden by the flags."""
    from hpd_toolkit.training.distill import DistillConfig, load_config_file

    values = load_config_file(args.config) if args.config else {}
    values.update({k: v for k, v in vars(args).items() if k in DistillConfig.fields() and v is not None})
    missing = [f"--{k}" for k in ("teacher", "student", "corpus", "output") if k not in values]
    if missing:
        raise ValueError(f"{', '.join(missing)} must be given (as flags or in --config).")
    return values


def distill_command(args):
    from hpd_toolkit.training.distill import DistillConfig, distill

    distill(DistillConfig(**distill_settings(args)))


def release_command(args):
    from hpd_toolkit.training.hub_push import files_to_push
    from hpd_toolkit.training.release import NOT_PUSHED, SUBMISSION_DIR, build_release, check_release, submission_status

    if args.check:
        problems = check_release(args.check, trust_remote_code=args.trust_remote_code)
        refused, pending = submission_status(args.check, trust_remote_code=args.trust_remote_code)
        if problems or refused:
            raise ValueError("; ".join(filter(None, [problems and f"{args.check} is not fit to push: "
                                                     f"{'; '.join(problems)}", refused])) + ".")
        print(f"{args.check}: files, model card and both loaders check out.")
        if pending:
            print(f"The MTEB submission is not ready: {pending}.")
        return
    missing = [flag for flag, value in (("MODEL", args.model), ("--out", args.out), ("--repo-id", args.repo_id))
               if value is None]
    if missing:
        raise ValueError(f"{', '.join(missing)} must be given (or --check DIR to check a release folder).")
    out, reference = build_release(args.model, args.out, args.repo_id, args.results or (), args.mteb_results,
                                   args.license, args.base_model, weights_dtype=args.weights_dtype,
                                   overwrite=args.overwrite, trust_remote_code=args.trust_remote_code,
                                   exports=args.export or ())
    problems = check_release(out, reference)
    refused, pending = submission_status(out)
    if problems or refused:
        raise ValueError(f"the release folder {out} failed its checks, nothing was pushed: "
                         f"{'; '.join([*problems, *filter(None, [refused])])}.")
    print(f"Release folder {out} (checked: both loaders reproduce the model, the card parses):")
    for name, path in files_to_push(out, NOT_PUSHED).items():  # exactly what --push uploads
        print(f"  {name}  ({path.stat().st_size:,} bytes)")
    if args.push:
        from hpd_toolkit.training.hub_push import push_folder
        from hpd_toolkit.training.release import finish_mteb_submission

        pushed = push_folder(out, args.repo_id, private=args.private, revision=args.revision,
                             commit_message=args.commit_message or f"Release {args.repo_id} with hpd release",
                             ignore_patterns=NOT_PUSHED)
        print(f"Pushed in one commit: {pushed.url}")
        if args.mteb_results:
            folder = finish_mteb_submission(out, args.repo_id, pushed)
            print(f"MTEB submission ready (not pushed; see {out / SUBMISSION_DIR / 'SUBMITTING.md'}): {folder}")
    elif args.mteb_results:
        print(f"MTEB submission prepared in {out / SUBMISSION_DIR}, not ready: {pending}.")


def add_model_flags(parser):
    """--model, --batch-size and --trust-remote-code: the flags of every command that encodes with a model."""
    parser.add_argument("--model", help="HPD folder, sentence-transformers folder or Hub id (default: the project's "
                        "default model in releases/)")
    parser.add_argument("--batch-size", type=int, default=64)
    add_trust_flag(parser)


def add_trust_flag(parser):
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run Python code shipped with a non-HPD model (HPD models load with the installed code)")


def add_backend_flags(parser, precision=True):
    parser.add_argument("--backend", default="torch", help="torch (default; any model), onnx or openvino (the graph "
                        "`hpd export` wrote into an HPD folder)")
    parser.add_argument("--file-name", help="which exported graph, relative to the model folder (default "
                        "onnx/model.onnx or openvino/openvino_model.xml; e.g. onnx/model_qint8_avx512_vnni.onnx)")
    if not precision:  # hpd eval retrieval: --precision is how the index stores vectors, an option of its own
        return
    parser.add_argument("--precision", default="float32",
                        help=f"{' | '.join(PRECISIONS)}: embedding precision (sentence-transformers' "
                        "quantize_embeddings): int8/uint8 use the "
                        "ranges `hpd calibrate` stored with the model; binary/ubinary keep sign bits, 8 per byte")


def add_overwrite_flag(parser, target):
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace {target} even if it is a non-empty folder hpd did not write")


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser that can add its flags when it is used (`add_flags`): `hpd distill`'s come from
    DistillConfig, whose module imports torch, which `hpd --help` and the other commands should not wait for."""

    def __init__(self, *args, add_flags=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_flags = add_flags

    def parse_known_args(self, args=None, namespace=None):  # also the way to `hpd distill --help`
        if self.add_flags is not None:
            add_flags, self.add_flags = self.add_flags, None
            add_flags(self)
        return super().parse_known_args(args, namespace)


def add_setting_flags(parser, settings):
    """One flag per field of the dataclass `settings`, help and argparse keywords (choices, action, nargs) from its
    metadata: a new setting is one field, and the default shown is the field's own."""
    for field in dataclasses.fields(settings):
        flag = dict(field.metadata)
        if field.type is bool:
            flag["action"] = "store_true"
        elif "action" not in flag:
            # int and float settings are converted here; list settings pass their comma-separated string on
            flag["type"] = next((t for t in (int, float) if field.type in (t, t | None)), str)
        if field.default not in (dataclasses.MISSING, None) and field.type is not bool:
            flag["help"] = flag.get("help", "") + f" (default: {field.default})"
        # None is "not given", so only the flags on the command line override a --config file's settings
        parser.add_argument(f"--{field.name.replace('_', '-')}", default=None, **flag)


def add_distill_flags(parser):
    from hpd_toolkit.training.distill import DistillConfig

    parser.add_argument("--config", help="YAML or TOML file of these settings (flags override it)")
    add_setting_flags(parser, DistillConfig)


def build_parser():
    parser = argparse.ArgumentParser(prog="hpd", description="HPD sentence-embedding toolkit.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=CommandParser)

    convert = commands.add_parser(
        "convert", help="convert a sentence-transformers model to an HPD folder, or back",
        description="Convert a sentence-transformers model (2022 or current layout) or HPD folder, local or a Hub id, "
        "into an HPD folder (loads with AutoModel, SentenceTransformer and HPDModel) or into a classic "
        "sentence-transformers stack.")
    convert.add_argument("source", help="model folder or Hub id, e.g. Xuandong/HPD-TinyBERT-F128")
    convert.add_argument("output", help="folder to write")
    convert.add_argument("--to", choices=("hpd", "sentence-transformers"), default="hpd", help="output format (default: hpd)")
    add_overwrite_flag(convert, "OUTPUT")
    add_trust_flag(convert)
    convert.set_defaults(run=convert_command)

    encode = commands.add_parser(
        "encode", help="embed sentences (the default model unless --model)",
        description="Embed sentences given as arguments or one per line in --input (row i is line i). Writes a float32 "
        ".npy array with --output, else prints one embedding per line.")
    encode.add_argument("sentences", nargs="*", help="sentences to embed")
    encode.add_argument("--input", help="text file with one sentence per line, or - for stdin")
    encode.add_argument("--output", help="write the embeddings here as a .npy array")
    encode.add_argument("--normalize", action="store_true", help="scale each embedding to unit length (after --dim)")
    encode.add_argument("--dim", type=int, help="keep the first DIM coordinates of each embedding (a size the model "
                        "was trained for: config.json's matryoshka_dims; others warn)")
    add_model_flags(encode)
    add_backend_flags(encode)
    encode.set_defaults(run=encode_command)

    evaluate = commands.add_parser("eval", help="evaluate a model on STS (the paper's table), retrieval or with MTEB")
    eval_commands = evaluate.add_subparsers(dest="eval_command", required=True, metavar="BENCHMARK")
    sts = eval_commands.add_parser(
        "sts", help="Spearman x 100 on STS12-16, STS-B, SICK-R",
        description="Score a model on STS12-16 (SentEval 'all' setting), STS-B test and SICK-R test: Spearman "
        "correlation x 100 between cosine similarity and gold scores. Each distinct sentence is encoded once.")
    sts.add_argument("--data", required=True, help="data folder: SentEval layout (senteval) or raw releases (mteb)")
    sts.add_argument("--protocol", choices=("senteval", "mteb"), default="senteval",
                     help="senteval: the SimCSE/HPD papers' tokenised data (default); mteb: raw text as MTEB reads it")
    sts.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset of %(default)s")
    sts.add_argument("--max-seq-length", type=int, help="truncate inputs to this many tokens (default: the model's)")
    sts.add_argument("--dim", type=int, help="score the first DIM coordinates of each embedding (a size the model "
                     "was trained for: config.json's matryoshka_dims; others warn)")
    sts.add_argument("--output", help="write the results JSON here")
    sts.add_argument("--compare", action="store_true", help="add the published HPD and SimCSE rows and the differences")
    add_model_flags(sts)
    add_backend_flags(sts)
    sts.set_defaults(run=eval_sts_command)

    mteb = eval_commands.add_parser(
        "mteb", help="run the mteb package on STS tasks and write leaderboard result files",
        description="Evaluate with the real mteb package (its own scoring). With --data the tasks are fed from the "
        "local raw releases and the Hub is never used; without it mteb downloads as usual. Results land in mteb's "
        "layout OUT/<org>__<name>/<revision>/<Task>.json, with the model's ModelMeta as Python source.")
    mteb.add_argument("--tasks", default=",".join(task.mteb for task in TASK_TABLE.values()),
                      help="comma-separated mteb task names: the STS tasks and SciFact (default: %(default)s)")
    mteb.add_argument("--data", help="folder of the raw official releases (e.g. ../shared/data/sts-raw) or, for "
                      "SciFact, the folder holding scifact/ in BEIR format (e.g. ../shared/data/retrieval)")
    mteb.add_argument("--output-folder", required=True, help="where mteb's results layout is written")
    mteb.add_argument("--name", help="ORG/NAME for the results and ModelMeta (default: local/<folder> or the Hub id)")
    add_model_flags(mteb)
    mteb.set_defaults(run=eval_mteb_command)

    retrieval = eval_commands.add_parser(
        "retrieval", help="nDCG@10, Recall@100, index size and query speed on a BEIR folder with a faiss index",
        description="Encode a BEIR folder's corpus (title + text, cached on disk per model and text), index it with "
        "faiss, run the test queries and report nDCG@10, Recall@100 (trec_eval's), index bytes, corpus documents/s, "
        "query latency one at a time (encode + search, p50/p95) and batched queries/s.")
    retrieval.add_argument("--data", required=True, help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv "
                           "(e.g. ../shared/data/retrieval/scifact)")
    retrieval.add_argument("--index", choices=("flat", "hnsw"), default="flat",
                           help="flat: exact search; hnsw: approximate graph search (default: %(default)s)")
    retrieval.add_argument("--precision", choices=("float32", "int8", "binary"), default="float32",
                           help="how each document vector is stored (default: %(default)s)")
    retrieval.add_argument("--rescore", type=int, default=0, metavar="N",
                           help="int8/binary: re-rank the top N (>= 100) by float cosine with the cached float vectors")
    retrieval.add_argument("--ef-search", type=int, default=256, help="hnsw: candidates kept while searching "
                           "(more: better recall, slower; default: %(default)s)")
    retrieval.add_argument("--cache-dir", help="where document vectors are cached (default: $HPD_CACHE/document-vectors, "
                           "$HPD_CACHE defaulting to ~/.cache/hpd)")
    retrieval.add_argument("--output", help="write the results JSON here")
    add_model_flags(retrieval)
    add_backend_flags(retrieval, precision=False)
    retrieval.set_defaults(run=eval_retrieval_command)

    distill = commands.add_parser(
        "distill", help="distil a teacher into a small HPD student",
        description="Homomorphic Projective Distillation: teacher vectors of a corpus, projected to --dim by PCA "
        "without mean-centring, taught to a student (encoder + mean pooling + Dense + tanh) with MSE. Every stage is "
        "resumable from --work-dir; runs under torchrun / accelerate launch for several processes.",
        add_flags=add_distill_flags)
    distill.set_defaults(run=distill_command)

    export = commands.add_parser(
        "export", help="export an HPD model as one ONNX or OpenVINO graph (optionally int8) into its folder",
        description="Export the whole model (encoder, pooling, head, normalisation) as one graph with dynamic batch "
        "and sequence length into MODEL/onnx/ or MODEL/openvino/, checked against the PyTorch model before it is "
        "written. Run it with hpd encode / hpd eval sts --backend onnx|openvino, or from Python with "
        "hpd_inference.HPDOnnxEncoder / HPDOpenVINOEncoder.")
    export.add_argument("model", help="HPD model folder (convert other models first with hpd convert)")
    export.add_argument("--format", default="onnx", help="onnx (default) or openvino")
    export.add_argument("--quantize", default="none", help="none (float32, default); int8-dynamic (ONNX: int8 "
                        "weights, activations quantized on the fly) or int8-static (OpenVINO: NNCF, needs "
                        "--calibration)")
    export.add_argument("--target", default="avx512_vnni", help="int8-dynamic settings and file name, as optimum's: "
                        "avx512_vnni (default), avx512, avx2, arm64")
    export.add_argument("--int8-ffn-output", default="float", help="int8-dynamic: keep the feed-forward output "
                        "projections float32 (float, default: closer to float32) or quantize them too (int8: optimum's "
                        "preset exactly, smaller and faster; file name ends in _full)")
    export.add_argument("--calibration", nargs="+", help="int8-static: sentences like those you will encode "
                        "(text file, one per line, or any corpus hpd distill reads)")
    export.add_argument("--calibration-sentences", type=int, default=300,
                        help="how many calibration sentences int8-static samples (default %(default)s)")
    add_overwrite_flag(export, "exported files in MODEL/onnx or MODEL/openvino")
    export.set_defaults(run=export_command)

    calibrate = commands.add_parser(
        "calibrate", help="store the int8/uint8 embedding ranges with a model (for --precision int8|uint8)",
        description="Encode sentences sampled from a corpus and store the per-dimension minimum and maximum of the "
        "embeddings in MODEL/embedding_ranges.json, so that every later int8/uint8 encoding (queries and documents "
        "alike) uses the same buckets.")
    calibrate.add_argument("model", help="model folder (HPD or sentence-transformers)")
    calibrate.add_argument("--corpus", nargs="+", required=True,
                           help="text files (one sentence per line), AllNLI .tsv.gz or WikiExtractor folders")
    calibrate.add_argument("--sentences", type=int, default=10000, help="sample size (default %(default)s)")
    calibrate.add_argument("--seed", type=int, default=0)
    calibrate.add_argument("--batch-size", type=int, default=64)
    add_trust_flag(calibrate)
    calibrate.set_defaults(run=calibrate_command)

    release = commands.add_parser(
        "release", help="build, check and optionally push a Hub-ready model folder",
        description="Build the folder that goes to the Hub (weights, remote code, tokenizer, sentence-transformers "
        "files, model card with results), check it (both loaders in fresh offline processes reproduce the model, the "
        "card's metadata parses) and, with --push, upload it in one commit.")
    release.add_argument("model", nargs="?", help="HPD or sentence-transformers model folder (or Hub id)")
    release.add_argument("--out", help="release folder to write")
    release.add_argument("--repo-id", help="Hub repository, ORG/NAME")
    release.add_argument("--results", nargs="+", help="`hpd eval sts --output` files of this model")
    release.add_argument("--mteb-results", help="`hpd eval mteb --output-folder` of this model")
    release.add_argument("--license", default="apache-2.0", help="licence id for the card (default: %(default)s)")
    release.add_argument("--base-model", help="Hub id of the student's base model for the card")
    release.add_argument("--weights-dtype", choices=("float32", "float16"), default="float32",
                         help="how the weights are stored; float16 halves the folder and still computes in float32 "
                         "(default: %(default)s)")
    release.add_argument("--export", help="also ship exported graphs: onnx (float32 and int8-dynamic), openvino "
                         "(float32), comma-separated; the card shows how to run them")
    release.add_argument("--push", action="store_true", help="upload to the Hub after the checks pass")
    release.add_argument("--private", action="store_true", help="create the Hub repository as private")
    release.add_argument("--revision", default="main", help="branch to commit to (default: %(default)s)")
    release.add_argument("--commit-message", help="commit message for --push")
    release.add_argument("--check", metavar="DIR", help="only check an existing release folder")
    add_overwrite_flag(release, "--out")
    add_trust_flag(release)
    release.set_defaults(run=release_command)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from configuration_hpd import TruncationWarning

    shown = warnings.showwarning

    def one_line(message, category, *rest):  # the toolkit's own warnings read like its errors
        if issubclass(category, TruncationWarning):
            print(f"hpd {args.command}: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, *rest)

    warnings.showwarning = one_line
    try:
        # The command shows its own progress; transformers' per-load bars and reports are noise here.
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        args.run(args)
    except (ValueError, OSError) as error:
        if os.environ.get("HPD_DEBUG"):
            raise
        message = " ".join(str(error).split())  # library messages can span lines; ours is one line
        print(f"hpd {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if os.environ.get("HPD_DEBUG"):
            raise
        # distill keeps every finished stage in its work dir; the other commands write nothing half-done
        resume = "; run the same command again to resume" if args.command == "distill" else ""
        print(f"hpd {args.command}: interrupted{resume}", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown
    return 0


if __name__ == "__main__":
    sys.exit(main())
