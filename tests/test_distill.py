"""hpd distill on tiny in-process models: every stage, resuming, the projection, layers, config files, errors."""

import dataclasses
import gzip
import json
import os
import random
import re
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import hpd_cli
from conftest import REPO, WORDS, tiny_model
from modeling_hpd import HPDModel
from hpd_models import save_hpd_folder
from hpd_toolkit.training.corpus import prepare_sentences, read_corpus, wiki_sentences
from hpd_toolkit.training.distill import DistillConfig, TeacherStore, build_student, distill, fit_projection

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


@pytest.fixture(scope="module")
def models(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("models")
    save_hpd_folder(tiny_model(seed=1, embedding_dim=24), tokenizer, root / "teacher")
    save_hpd_folder(tiny_model(seed=2, embedding_dim=None, **NO_DROPOUT), tokenizer, root / "student")
    rng = random.Random(0)
    sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + "." for _ in range(700)]
    (root / "corpus.txt").write_text("\n".join(sentences) + "\n")
    return root


def config_for(models, tmp_path, **overrides):
    settings = dict(teacher=str(models / "teacher"), student=str(models / "student"), corpus=[str(models / "corpus.txt")],
                    output=str(tmp_path / "out"), dim=8, pca_sentences=100, valid_sentences=20, epochs=2,
                    batch_size=32, warmup_steps=3, eval_steps=5, chunk_size=64, log_steps=1)
    return DistillConfig(**{**settings, **overrides})


def read_log(config):
    return [json.loads(line) for line in open(config.run_dir() / "train_log.jsonl")]


def test_full_run_writes_every_artefact(models, tmp_path):
    config = config_for(models, tmp_path)
    output = distill(config)
    work = tmp_path / "out.work"
    assert {p.name for p in work.iterdir()} == {"settings.json", "sentences", "teachers", ".lock",
                                                "projection-pca-d8-n100.safetensors", config.run_dir().name}
    assert [p.name for p in (work / "teachers").iterdir()] == [config.teacher_dir(config.teacher[0]).name]
    assert {p.name for p in config.run_dir().iterdir()} == {"settings.json", "checkpoints", "train_log.jsonl", "best"}
    record = json.loads((output / "distill_config.json").read_text())
    assert record["teacher"] == config.teacher[0] and record["student"] == config.student
    assert record["settings"]["dim"] == 8 and record["corpus"]["valid"] == 20
    assert len(record["corpus"]["sha256"]) == 64 and record["selected_by"] == "valid-mse"
    assert record["selection"].startswith(f"step {record['best_step']} of 44: the lowest validation MSE")

    log = read_log(config)
    # validation before the first step; as the first evaluation it is the selection so far
    assert log[0] == {"step": 0, "valid_mse": log[0]["valid_mse"], "selected": "valid-mse"}
    evaluations = [r for r in log if "valid_mse" in r]
    assert [r["step"] for r in evaluations] == [0, 5, 10, 15, 20, 25, 30, 35, 40, 44]
    assert evaluations[-1]["valid_mse"] < 0.5 * evaluations[0]["valid_mse"]
    assert {"loss", "lr", "sentences_per_s"} <= set(log[1])
    assert record["validation"]["valid_mse"] == min(r["valid_mse"] for r in evaluations)

    model = HPDModel.from_pretrained(output)
    assert model.config.embedding_dim == 8 and model.config.projection_activation == "tanh"
    assert model.encode(["the cat sleeps."]).shape == (1, 8)


def test_a_run_trained_on_from_another_keeps_its_record(models, tmp_path):
    config = config_for(models, tmp_path, epochs=1)
    first = distill(config)
    record = json.loads((first / "distill_config.json").read_text())
    later = config_for(models, tmp_path, student=str(first), output=str(tmp_path / "later"), epochs=1, lr=3e-4,
                       work_dir=str(tmp_path / "out.work"))
    output = distill(later)
    continued = json.loads((output / "distill_config.json").read_text())
    assert continued["student"] == str(first) and continued["continues"] == record
    assert continued["settings"]["lr"] == 3e-4 and "continues" not in record
    # the same targets (work dir, projection) and the trained encoder: the later run does not start afresh
    assert read_log(later)[0]["valid_mse"] < read_log(config)[0]["valid_mse"]


def test_finished_stages_are_skipped(models, tmp_path, monkeypatch):
    config = config_for(models, tmp_path, epochs=1)
    distill(config)
    before = (tmp_path / "out" / "model.safetensors").read_bytes()

    import hpd_models as sts

    def no_encoding(*args, **kwargs):
        raise AssertionError("the teacher stage ran again")

    monkeypatch.setattr(sts, "encode_by_length", no_encoding)
    monkeypatch.setattr(torch.optim.AdamW, "step", no_encoding)
    distill(config)
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == before


def test_resume_after_a_kill_in_teacher_encoding(models, tmp_path, monkeypatch):
    import hpd_models as sts
    from hpd_models import encode_by_length, load_encoder

    config = config_for(models, tmp_path, epochs=1)
    calls = []

    def dies_on_the_fourth_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt("killed")
        return encode_by_length(*args, **kwargs)

    monkeypatch.setattr(sts, "encode_by_length", dies_on_the_fourth_chunk)
    with pytest.raises(KeyboardInterrupt):
        distill(config)
    teacher_dir = config.teacher_dir(config.teacher[0])
    chunks = sorted(teacher_dir.glob("chunk_*.npy"))
    assert [c.name for c in chunks] == ["chunk_000000.npy", "chunk_000001.npy", "chunk_000002.npy"]

    encoded_again = []
    monkeypatch.setattr(sts, "encode_by_length", lambda *a, **k: encoded_again.append(1) or encode_by_length(*a, **k))
    distill(config)
    sentences = [*(tmp_path / "out.work/sentences/valid.txt").read_text().splitlines(),
                 *(tmp_path / "out.work/sentences/train.txt").read_text().splitlines()]
    store = TeacherStore(teacher_dir, len(sentences), config.chunk_size)
    assert len(encoded_again) == store.chunk_count - 3  # only the missing chunks
    teacher, size = load_encoder(config.teacher[0]), config.chunk_size
    expected = np.concatenate([encode_by_length(teacher, sentences[i : i + size], show_progress_bar=False)
                               for i in range(0, len(sentences), size)])
    np.testing.assert_array_equal(store.rows(np.arange(len(sentences))), expected)  # none lost, none twice


@pytest.mark.parametrize("matryoshka", [{}, {"matryoshka_dims": [8, 4, 2], "matryoshka_weights": [1, 0.5, 2]}],
                         ids=["plain", "matryoshka"])
def test_resume_after_a_kill_in_training_continues_from_the_checkpoint(models, tmp_path, monkeypatch, capsys,
                                                                       matryoshka):
    reference = config_for(models, tmp_path / "a", **matryoshka)
    distill(reference)

    config = config_for(models, tmp_path / "b", **matryoshka)
    real_step, steps = torch.optim.AdamW.step, []

    def dies_at_step_8(self, *args, **kwargs):
        steps.append(1)
        if len(steps) == 8:
            raise KeyboardInterrupt("killed")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", dies_at_step_8)
    with pytest.raises(KeyboardInterrupt):
        distill(config)
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    distill(config)
    assert "Resuming training from step 5" in capsys.readouterr().out

    log = read_log(config)
    trained = [r["step"] for r in log if "loss" in r]
    assert trained == list(range(1, 45))  # every step once: the killed steps 6-7 were dropped and redone
    assert [r for r in log if "valid_mse" in r] == [r for r in read_log(reference) if "valid_mse" in r]
    assert [r["loss"] for r in log if "loss" in r] == [r["loss"] for r in read_log(reference) if "loss" in r]
    assert all(("valid_mse_d4" in r) == bool(matryoshka) for r in log if "valid_mse" in r)
    a, b = load_file(tmp_path / "a" / "out" / "model.safetensors"), load_file(tmp_path / "b" / "out" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_projection_is_the_uncentred_pca_of_the_sample():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12)) + 3.0  # far from the origin
    weight, bias = fit_projection(vectors, 4, "pca")
    _, _, vt = np.linalg.svd(vectors - vectors.mean(0), full_matrices=False)
    signs = np.sign((weight * vt[:4]).sum(1))
    np.testing.assert_allclose(weight, signs[:, None] * vt[:4], atol=1e-5)
    assert not bias.any()  # applied to t itself, not t - mean

    centred_weight, centred_bias = fit_projection(vectors, 4, "pca-centered")
    np.testing.assert_allclose(centred_weight, weight, atol=1e-6)
    np.testing.assert_allclose(centred_bias, -weight @ vectors.mean(0), atol=1e-4)
    identity, zero = fit_projection(vectors, 12, "none")
    assert np.array_equal(identity, np.eye(12)) and not zero.any()


def test_layer_reduction_keeps_the_chosen_layers(tmp_path, tokenizer):
    base = tiny_model(seed=4, embedding_dim=None, num_hidden_layers=3)
    save_hpd_folder(base, tokenizer, tmp_path / "base")
    student, _ = build_student(str(tmp_path / "base"), embedding_dim=6, layers=[0, 2])
    assert student.config.num_hidden_layers == 2 and student.projection.out_features == 6
    for name, value in base.bert.encoder.layer[2].state_dict().items():
        assert torch.equal(student.bert.encoder.layer[1].state_dict()[name], value)
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, base.bert.embeddings.word_embeddings.weight)

    base.bert.save_pretrained(tmp_path / "plain-bert")  # a plain checkpoint, as TinyBERT is published
    tokenizer.save_pretrained(tmp_path / "plain-bert")
    config = json.loads((tmp_path / "plain-bert" / "config.json").read_text())
    (tmp_path / "plain-bert" / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    plain, _ = build_student(str(tmp_path / "plain-bert"), embedding_dim=6, layers=[1])
    assert torch.equal(plain.bert.encoder.layer[0].output.dense.weight, base.bert.encoder.layer[1].output.dense.weight)

    for layers in ([3], [2, 0], [], [1, 1]):
        with pytest.raises(ValueError, match="must be increasing layer indices from 0 to 2"):
            build_student(str(tmp_path / "base"), embedding_dim=6, layers=layers)


# --- corpora ------------------------------------------------------------------------------------

def test_wikiextractor_shards_become_sentences(tmp_path):
    shard = tmp_path / "wiki" / "AA" / "wiki_00"
    shard.parent.mkdir(parents=True)
    shard.write_text('<doc id="1" url="u" title="Town">\nTown\n\nTown is a small place in the north of the country. '
                     'It had 1,200 people in 2010 according to the census. Tiny.\nHistory.\n'
                     'The town was founded by settlers who came from the coast in 1850!\n</doc>\n')
    assert list(read_corpus([tmp_path / "wiki"])) == [
        "Town is a small place in the north of the country.",
        "It had 1,200 people in 2010 according to the census.",
        "The town was founded by settlers who came from the coast in 1850!"]
    assert list(wiki_sentences(["word " * 70 + "end."])) == []  # over 64 words


def test_plain_gzip_and_allnli_corpora(tmp_path):
    with gzip.open(tmp_path / "lines.txt.gz", "wt") as handle:
        handle.write("first line\n\nsecond line\n")
    with gzip.open(tmp_path / "AllNLI.tsv.gz", "wt") as handle:
        handle.write("split\tdataset\tfilename\tsentence1\tsentence2\tlabel\n"
                     "train\tSNLI\tx\tA man eats.\tSomeone eats.\tentailment\n"
                     "dev\tSNLI\tx\tHeld out.\tAlso held out.\tneutral\n")
    assert list(read_corpus([tmp_path / "lines.txt.gz", tmp_path / "AllNLI.tsv.gz"])) == [
        "first line", "second line", "A man eats.", "Someone eats."]


def test_senteval_transfer_folder_drops_labels_and_ids(tmp_path):
    root = tmp_path / "senteval_transfer"
    for folder in ("SNLI", "TREC", "SST/binary", "MRPC"):
        (root / folder).mkdir(parents=True)
    (root / "SNLI" / "s1.dev").write_text("A dog runs .\n")
    (root / "TREC" / "TREC_10.label").write_text("NUM:dist How far is it to Aspen ?\n")
    (root / "SST" / "binary" / "sentiment-dev").write_text("a charming journey . \t1\n")
    (root / "MRPC" / "msr_paraphrase_test.txt").write_text(
        "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t10\t11\tShares fell .\tStocks dropped .\n")
    (root / "SOURCE.txt").write_text("not a corpus file\n")
    assert list(read_corpus([root])) == ["A dog runs .", "a charming journey .", "How far is it to Aspen ?",
                                         "Shares fell .", "Stocks dropped ."]


def test_deduplicated_seeded_shuffle_and_split(tmp_path):
    (tmp_path / "c.txt").write_text("".join(f"sentence {i % 50}\n" for i in range(200)))
    train, valid, digest = prepare_sentences([tmp_path / "c.txt"], valid_sentences=10, seed=1)
    assert len(train) == 40 and len(valid) == 10 and len(set(train + valid)) == 50
    assert prepare_sentences([tmp_path / "c.txt"], valid_sentences=10, seed=1) == (train, valid, digest)
    assert prepare_sentences([tmp_path / "c.txt"], valid_sentences=10, seed=2)[0] != train
    assert len(prepare_sentences([tmp_path / "c.txt"], max_sentences=5, valid_sentences=10)[0]) == 5


# --- configuration files ----------------------------------------------------------------------------

@pytest.mark.parametrize("suffix, text", [
    (".yaml", "teacher: T\nstudent: S\ncorpus: [a.txt]\noutput: out\ndim: 64\nwarmup-steps: 7\n"),
    (".toml", 'teacher = "T"\nstudent = "S"\ncorpus = ["a.txt"]\noutput = "out"\ndim = 64\nwarmup-steps = 7\n'),
])
def test_config_file_with_flags_overriding_it(tmp_path, monkeypatch, suffix, text):
    import hpd_toolkit.training.distill

    seen = []
    monkeypatch.setattr(hpd_toolkit.training.distill, "distill", seen.append)
    (tmp_path / f"run{suffix}").write_text(text)
    assert hpd_cli.main(["distill", "--config", str(tmp_path / f"run{suffix}"), "--dim", "32"]) == 0
    assert (seen[0].teacher, seen[0].corpus, seen[0].dim, seen[0].warmup_steps) == (["T"], ["a.txt"], 32, 7)


def test_config_file_errors(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("teacher: T\ntemperature: 2\n")
    assert hpd_cli.main(["distill", "--config", str(tmp_path / "bad.yaml")]) == 1
    assert "unknown setting(s) temperature" in capsys.readouterr().err
    assert hpd_cli.main(["distill", "--teacher", "T"]) == 1
    assert "--student, --corpus, --output must be given" in capsys.readouterr().err


# --- the command line: flags made from DistillConfig's fields -----------------------------------------

SETTINGS = {field.name: field for field in dataclasses.fields(DistillConfig)}


def flag(name):
    return f"--{name.replace('_', '-')}"


def distill_help(capsys, monkeypatch):
    """`hpd distill --help`, one line per option (wide enough that argparse wraps nothing)."""
    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit) as exit:
        hpd_cli.main(["distill", "--help"])
    assert exit.value.code == 0
    options = {}
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("  --"):
            options[line.split()[0]] = line.strip()
        elif options and line.startswith("    "):  # the help of a long option comes on the next line
            options[next(reversed(options))] += " " + line.strip()
    return options


def test_every_setting_is_a_flag_with_its_help_and_the_dataclass_default(capsys, monkeypatch):
    lines = distill_help(capsys, monkeypatch)
    assert set(lines) == {"--config", *map(flag, SETTINGS)}  # a new field gets its flag, and nothing else does
    for name, field in SETTINGS.items():
        assert field.metadata.get("help"), f"{name} has no help text"
        shown = "" if field.default in (dataclasses.MISSING, None) or field.type is bool else \
            f" (default: {field.default})"
        assert lines[flag(name)].endswith(field.metadata["help"] + shown), lines[flag(name)]


def test_every_flag_parses_to_what_distill_config_takes(monkeypatch):
    import hpd_toolkit.training.distill

    required = ["--teacher", "T", "--student", "S", "--corpus", "a.txt", "--output", "out"]
    untouched = hpd_cli.build_parser().parse_args(["distill", *required])
    # unset flags stay None, so that only the flags given override a --config file
    assert all(getattr(untouched, name) is None for name in SETTINGS if flag(name) not in required)
    argv = ["distill", "--teacher", "T", "--teacher", "U", "--teacher-weights", "1,0.5", "--corpus", "a", "b",
            "--layers", "0,2", "--matryoshka-dims", "64,32", "--matryoshka-weights", "1,2", "--student", "S",
            "--output", "out", "--sts-dev", "senteval", "--work-dir", "w", "--dim", "64"]
    expected = {"teacher": ["T", "U"], "teacher_weights": [1.0, 0.5], "corpus": ["a", "b"], "layers": [0, 2],
                "matryoshka_dims": [64, 32], "matryoshka_weights": [1.0, 2.0], "student": "S", "output": "out",
                "sts_dev": "senteval", "work_dir": "w", "dim": 64}
    for name, field in SETTINGS.items():  # every other setting given, as a value other than its default
        if name in expected or flag(name) in argv:
            continue
        if field.type is bool:
            argv.append(flag(name))
            expected[name] = True
        else:
            choices = field.metadata.get("choices")
            value = next(c for c in choices if c != field.default) if choices else \
                (2 * (field.default or 3) if field.type in (int, int | None) else field.default / 2)
            argv += [flag(name), str(value)]
            expected[name] = value
    seen = []
    monkeypatch.setattr(hpd_toolkit.training.distill, "distill", seen.append)
    args = hpd_cli.build_parser().parse_args(argv)
    args.run(args)
    assert set(expected) == set(SETTINGS)
    assert {name: getattr(seen[0], name) for name in SETTINGS} == expected


def test_readme_lists_every_distill_flag_with_its_defaults_and_choices(capsys, monkeypatch):
    readme = (REPO / "README.md").read_text()
    synopsis = readme.split("## Distilling: `hpd distill`")[1].split("```bash\n")[1].split("```")[0]
    listed = dict(re.findall(r"\[?(--[a-z-]+)(?: ([^\s\[\]]+))?", synopsis))
    assert sorted(set(listed) ^ set(distill_help(capsys, monkeypatch))) == []  # missing from or unknown to hpd
    for name, field in SETTINGS.items():
        value = listed[flag(name)]
        if field.metadata.get("choices"):
            assert set(value.split("|")) == set(field.metadata["choices"]), name
        elif re.fullmatch(r"[0-9.e-]+", value) and field.default is not None:
            assert float(value) == field.default, name


def test_other_commands_do_not_wait_for_the_distill_module():
    code = ("import sys, hpd_cli; hpd_cli.build_parser().parse_args(['encode', 'x']); "
            "print('hpd_toolkit.training.distill' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.stdout.split() == ["False"], result.stderr


# --- many processes ---------------------------------------------------------------------------------

def test_two_processes_produce_the_same_artefacts_as_one(models, tmp_path):
    args = ["--teacher", str(models / "teacher"), "--student", str(models / "student"), "--corpus",
            str(models / "corpus.txt"), "--dim", "8", "--pca-sentences", "100", "--valid-sentences", "20",
            "--epochs", "1", "--batch-size", "32", "--warmup-steps", "3", "--eval-steps", "5", "--chunk-size", "64"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "hpd_cli", "distill", *args, "--output", str(tmp_path / "one")],
                            capture_output=True, text=True, env=env, cwd=REPO)
    assert single.returncode == 0, single.stderr[-3000:]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    double = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "hpd_cli", "distill",
                             *args, "--output", str(tmp_path / "two")], capture_output=True, text=True, env=env, cwd=REPO)
    assert double.returncode == 0, double.stderr[-3000:]

    one, two = tmp_path / "one.work", tmp_path / "two.work"
    [one_teacher], [two_teacher] = (one / "teachers").iterdir(), (two / "teachers").iterdir()
    assert one_teacher.name == two_teacher.name
    assert sorted(p.name for p in one_teacher.iterdir()) == sorted(p.name for p in two_teacher.iterdir())
    for chunk in one_teacher.glob("*.npy"):
        assert np.array_equal(np.load(chunk), np.load(two_teacher / chunk.name))
    projection = "projection-pca-d8-n100.safetensors"
    assert (one / projection).read_bytes() == (two / projection).read_bytes()
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == sorted(p.name for p in (tmp_path / "two").iterdir())
    a, b = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert json.loads((tmp_path / "two" / "distill_config.json").read_text())["processes"] == 2


# --- bad input: one clear line ------------------------------------------------------------------------

def run_distill(capsys, models, tmp_path, *extra, corpus=None):
    args = ["distill", "--teacher", str(models / "teacher"), "--student", str(models / "student"),
            "--corpus", str(corpus or models / "corpus.txt"), "--output", str(tmp_path / "out"), "--dim", "8",
            "--pca-sentences", "100", "--valid-sentences", "20", "--epochs", "1", *extra]
    code = hpd_cli.main(args)
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    return err


def test_error_for_an_empty_corpus(models, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("\n\n")
    assert "holds no sentences" in run_distill(capsys, models, tmp_path, corpus=tmp_path / "empty.txt")


def test_error_for_an_unreadable_corpus(models, tmp_path, capsys):
    assert "no such file or folder" in run_distill(capsys, models, tmp_path, corpus=tmp_path / "absent.txt")
    (tmp_path / "broken.txt.gz").write_bytes(b"not gzip at all")
    # the same output again: a run that failed on its corpus left no settings to conflict with
    assert "cannot be read" in run_distill(capsys, models, tmp_path, corpus=tmp_path / "broken.txt.gz")


def test_error_for_too_few_sentences(models, tmp_path, capsys):
    err = run_distill(capsys, models, tmp_path, "--pca-sentences", "5000")
    assert "fewer than --pca-sentences 5000" in err


def test_error_for_a_dim_larger_than_the_teacher(models, tmp_path, capsys):
    assert "larger than the teacher's embedding dimension (24)" in run_distill(capsys, models, tmp_path, "--dim", "32")


def test_error_for_layers_out_of_range(models, tmp_path, capsys):
    assert "0 to 1" in run_distill(capsys, models, tmp_path, "--layers", "0,5")


def test_error_for_a_teacher_that_cannot_encode(models, tmp_path, capsys):
    broken = tmp_path / "broken-teacher"
    broken.mkdir()
    (broken / "modules.json").write_text("[]")
    args = ["distill", "--teacher", str(broken), "--student", str(models / "student"), "--corpus",
            str(models / "corpus.txt"), "--output", str(tmp_path / "out"), "--pca-sentences", "100",
            "--valid-sentences", "20", "--dim", "8"]
    assert hpd_cli.main(args) == 1
    assert "broken-teacher" in capsys.readouterr().err


def test_error_for_a_work_dir_made_with_other_data_settings(models, tmp_path, capsys):
    distill(config_for(models, tmp_path, epochs=1))
    capsys.readouterr()
    err = run_distill(capsys, models, tmp_path, "--seed", "7", "--chunk-size", "64")
    assert "was made with different settings (seed: 42 -> 7)" in err and "to start fresh" in err


def test_other_training_settings_reuse_the_teacher_vectors(models, tmp_path, monkeypatch):
    import hpd_models as sts

    first = config_for(models, tmp_path, epochs=1)
    distill(first)
    monkeypatch.setattr(sts, "encode_by_length", lambda *a, **k: pytest.fail("the teacher ran again"))
    second = config_for(models, tmp_path, epochs=1, lr=3e-4, projection="pca-centered", dim=6)
    distill(second)
    assert first.run_dir() != second.run_dir() and first.run_dir().is_dir()
    assert (tmp_path / "out.work" / "projection-pca-centered-d6-n100.safetensors").is_file()
    assert HPDModel.from_pretrained(tmp_path / "out").config.embedding_dim == 6


def test_more_or_fewer_sentences_reuse_the_encoded_chunks(models, tmp_path, monkeypatch):
    import hpd_models as sts
    from hpd_models import encode_by_length, load_encoder

    encoded = []
    monkeypatch.setattr(sts, "encode_by_length", lambda *a, **k: encoded.append(len(a[1])) or encode_by_length(*a, **k))
    small = config_for(models, tmp_path, epochs=1, max_sentences=250)  # 20 valid + 250 train: chunks 0-4
    distill(small)
    assert encoded == [64, 64, 64, 64, 14]  # the last chunk only as far as needed: no teacher work wasted
    assert json.loads((tmp_path / "out" / "distill_config.json").read_text())["corpus"]["train"] == 250

    encoded.clear()
    distill(config_for(models, tmp_path, epochs=1, max_sentences=400))  # chunk 4 completed, 5 and 6 new
    assert encoded == [50, 64, 36]
    encoded.clear()
    distill(config_for(models, tmp_path, epochs=1, max_sentences=120))  # inside what is there
    assert encoded == []

    sentences = [*(tmp_path / "out.work/sentences/valid.txt").read_text().splitlines(),
                 *(tmp_path / "out.work/sentences/train.txt").read_text().splitlines()]
    store = TeacherStore(small.teacher_dir(small.teacher[0]), 420, small.chunk_size)
    expected = encode_by_length(load_encoder(small.teacher[0]), sentences[:448], show_progress_bar=False)
    np.testing.assert_allclose(store.rows(np.arange(420)), expected[:420], atol=1e-6)  # same order, same vectors


def test_bfloat16_teacher_is_close_to_float32_and_keeps_its_own_vectors(models, tmp_path):
    fp32 = config_for(models, tmp_path, epochs=1, work_dir=str(tmp_path / "fp32"))
    bf16 = config_for(models, tmp_path, epochs=1, work_dir=str(tmp_path / "bf16"), teacher_dtype="bfloat16")
    vectors = []
    for config in (fp32, bf16):
        distill(config)
        folder = config.teacher_dir(config.teacher[0])
        vectors.append(np.load(folder / "chunk_000000.npy"))
        assert json.loads((folder / "teacher.json").read_text())["teacher_dtype"] == config.teacher_dtype
    assert not np.array_equal(*vectors)  # autocast really ran
    cosines = (vectors[0] * vectors[1]).sum(1) / np.linalg.norm(vectors[0], axis=1) / np.linalg.norm(vectors[1], axis=1)
    assert cosines.min() > 0.999
    # the other precision in the same work dir: vectors of its own beside the float32 ones, nothing mixed
    distill(config_for(models, tmp_path, epochs=1, work_dir=str(tmp_path / "fp32"), teacher_dtype="bfloat16"))
    assert len(list((tmp_path / "fp32" / "teachers").iterdir())) == 2
    with pytest.raises(ValueError, match="--teacher-dtype must be one of float32, bfloat16; got .float16."):
        config_for(models, tmp_path, teacher_dtype="float16")


def test_least_squares_head_recovers_a_linear_tanh_map(models, tokenizer):
    from hpd_toolkit.training.distill import fit_head

    student, _ = build_student(str(models / "student"), 8, seed=0)
    sentences = (models / "corpus.txt").read_text().splitlines()[:300]

    def embed(output_value="sentence_embedding"):
        return student.encode(sentences, tokenizer, 64, convert_to_numpy=False, output_value=output_value)

    pooled = embed("pooled_embedding")
    mapping, offset = torch.randn(pooled.shape[1], 8, generator=torch.Generator().manual_seed(0)), torch.randn(8) * 0.1
    goal = torch.tanh((pooled - pooled.mean(0)) @ mapping / pooled.std() / pooled.shape[1] ** 0.5 + offset)
    before = torch.nn.functional.mse_loss(embed(), goal)
    fit_head(student, tokenizer, sentences, goal, 64)
    after = torch.nn.functional.mse_loss(embed(), goal)
    assert after < 1e-3 * before


def test_head_init_lstsq_starts_closer_to_the_teacher(models, tmp_path):
    random_head = config_for(models, tmp_path, epochs=1)
    distill(random_head)
    fitted = config_for(models, tmp_path, epochs=1, head_init="lstsq")
    distill(fitted)
    assert fitted.run_dir() != random_head.run_dir()
    assert read_log(fitted)[0]["valid_mse"] < 0.5 * read_log(random_head)[0]["valid_mse"]
    with pytest.raises(ValueError, match="--head-init must be one of random, lstsq"):
        config_for(models, tmp_path, head_init="zeros")


def test_a_damaged_projection_file_is_refused(models, tmp_path, capsys):
    config = config_for(models, tmp_path, epochs=1)
    distill(config)
    path = config.projection_path()
    from safetensors.numpy import save_file

    save_file({"weight": np.random.default_rng(0).normal(size=(8, 24)).astype(np.float32),
               "bias": np.zeros(8, dtype=np.float32)}, str(path), metadata={"kind": "pca"})
    with pytest.raises(RuntimeError, match="is not orthonormal .* delete the projection file"):
        distill(config_for(models, tmp_path, epochs=1, lr=3e-4))


def test_projection_survives_the_safetensors_round_trip(tmp_path):
    # 1000 x 24 makes scikit-learn pick its covariance solver, whose axes come Fortran-ordered; saved as raw
    # bytes they would load transposed (a real bug: the 150k reproduction first trained on such targets).
    from safetensors.numpy import load_file, save_file

    vectors = np.random.default_rng(0).normal(size=(1000, 24)).astype(np.float32)
    weight, bias = fit_projection(vectors, 8, "pca")
    save_file({"weight": weight, "bias": bias}, str(tmp_path / "p.safetensors"))
    loaded = load_file(str(tmp_path / "p.safetensors"))["weight"]
    np.testing.assert_array_equal(loaded, weight)
    np.testing.assert_allclose(loaded @ loaded.T, np.eye(8), atol=1e-5)
