"""hpd distill's choices on tiny in-process models: several teachers, selection, training precision and frozen
embeddings, passages, caching the teacher alone, and the safety of work dirs, corpora and outputs."""

import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import hpd_cli
from conftest import tiny_model
from test_distill import NO_DROPOUT, config_for, models, read_log, run_distill  # noqa: F401 (fixture)
from hpd_models import save_hpd_folder
from hpd_toolkit.training.corpus import prepare_sentences, read_corpus
from hpd_toolkit.training.distill import TeacherStore, distill


@pytest.fixture(scope="module")
def second_teacher(models, tokenizer):
    save_hpd_folder(tiny_model(seed=3, embedding_dim=12), tokenizer, models / "teacher-b")
    return str(models / "teacher-b")


def count_encodings(monkeypatch):
    import hpd_models as sts
    from hpd_models import encode_by_length

    calls = []
    monkeypatch.setattr(sts, "encode_by_length",
                        lambda encoder, sentences, *a, **k: calls.append(len(sentences)) or
                        encode_by_length(encoder, sentences, *a, **k))
    return calls


# --- several teachers --------------------------------------------------------------------------

def test_two_teachers_share_one_target_and_adding_one_encodes_only_it(models, second_teacher, tmp_path, monkeypatch):
    one = config_for(models, tmp_path, epochs=1)
    distill(one)
    calls = count_encodings(monkeypatch)
    two = config_for(models, tmp_path, epochs=1, teacher=[one.teacher[0], second_teacher], teacher_weights=[1, 0.5])
    distill(two)
    info = json.loads((tmp_path / "out.work" / "sentences" / "corpus.json").read_text())
    total = info["train"] + info["valid"]
    assert sum(calls) == total  # every sentence once, by the added teacher only
    assert two.run_dir() != one.run_dir() and two.projection_path() != one.projection_path()
    assert "-mix" in two.projection_path().name

    a = TeacherStore(two.teacher_dir(one.teacher[0]), total, two.chunk_size).rows(np.arange(total))
    b = TeacherStore(two.teacher_dir(second_teacher), total, two.chunk_size).rows(np.arange(total))
    assert a.shape[1] == 24 and b.shape[1] == 12
    from accelerate import Accelerator

    from hpd_toolkit.training.distill import teacher_stage

    sentences = [""] * total  # every vector is cached: nothing is encoded
    joint = teacher_stage(two, tmp_path / "out.work", sentences, total, Accelerator(cpu=True)).rows(np.arange(total))
    expected = np.concatenate([a / np.linalg.norm(a, axis=1, keepdims=True),
                               0.5 * b / np.linalg.norm(b, axis=1, keepdims=True)], axis=1)
    np.testing.assert_allclose(joint, expected, rtol=1e-6, atol=1e-7)

    record = json.loads((tmp_path / "out" / "distill_config.json").read_text())
    assert record["teacher"] == [one.teacher[0], second_teacher] and record["teacher_weights"] == [1.0, 0.5]


def test_teacher_weights_must_match_the_teachers(models, second_teacher, tmp_path, capsys):
    err = run_distill(capsys, models, tmp_path, "--teacher", second_teacher, "--teacher-weights", "1,2,3")
    assert "--teacher-weights needs one positive weight per teacher (2)" in err
    with pytest.raises(ValueError, match="names the same model twice"):
        config_for(models, tmp_path, teacher=[second_teacher, second_teacher])


def test_pca_min_words_fits_the_projection_on_the_long_items_alone(models, tmp_path, capsys):
    from safetensors.numpy import load_file as load_numpy

    from hpd_toolkit.training.distill import fit_projection

    plain = config_for(models, tmp_path, stop_after="start")
    long_only = config_for(models, tmp_path, stop_after="start", pca_min_words=9)
    distill(plain)
    distill(long_only)
    assert long_only.projection_path().name == plain.projection_path().name.replace(".safetensors", "-w9.safetensors")
    assert long_only.run_dir() != plain.run_dir()
    assert plain.run_settings().get("pca_min_words", "left out") == "left out"  # earlier runs keep their folders

    work = tmp_path / "out.work" / "sentences"
    valid, train = (work / "valid.txt").read_text().splitlines(), (work / "train.txt").read_text().splitlines()
    long_rows = np.array([i for i in range(100) if len(train[i].split()) >= 9])
    assert 8 <= len(long_rows) < 60  # a real subset, and enough for 8 dimensions
    store = TeacherStore(long_only.teacher_dir(long_only.teacher[0]), len(valid) + len(train), long_only.chunk_size)
    expected, _ = fit_projection(store.rows(len(valid) + long_rows), 8, "pca", long_only.seed)
    fitted = load_numpy(str(long_only.projection_path()))["weight"]
    np.testing.assert_allclose(np.abs(fitted @ expected.T), np.eye(8), atol=1e-4)  # the same axes
    assert not np.allclose(np.abs(load_numpy(str(plain.projection_path()))["weight"] @ fitted.T), np.eye(8), atol=1e-2)

    (tmp_path / "bad").mkdir()
    capsys.readouterr()
    err = run_distill(capsys, models, tmp_path / "bad", "--pca-min-words", "13")  # the corpus has 3-12 words each
    assert "only 0 of the first 100 training sentences have at least --pca-min-words 13 words" in err
    with pytest.raises(ValueError, match="--projection none fits none"):
        config_for(models, tmp_path, projection="none", pca_min_words=9)


# --- selection ----------------------------------------------------------------------------------

def test_selection_rules(models, tmp_path, capsys):
    last = config_for(models, tmp_path, epochs=1, select="last")
    distill(last)
    record = json.loads((tmp_path / "out" / "distill_config.json").read_text())
    assert record["best_step"] == 22 and record["selection"] == "step 22 of 22: the last step"
    log = read_log(last)
    assert [r["step"] for r in log if r.get("selected")] == [0, 5, 10, 15, 20, 22]

    mse = config_for(models, tmp_path, epochs=1)
    distill(mse)
    evaluations = [r for r in read_log(mse) if "valid_mse" in r]
    best = min(evaluations, key=lambda r: r["valid_mse"])
    assert json.loads((tmp_path / "out" / "distill_config.json").read_text())["best_step"] == best["step"]
    assert mse.run_dir() != last.run_dir()  # the rule decides what best/ holds, so it is part of the run

    capsys.readouterr()
    err = run_distill(capsys, models, tmp_path, "--select", "stsb-dev")
    assert "--select stsb-dev needs --sts-dev" in err


# --- the loss --------------------------------------------------------------------------------------

def test_cosine_distance_is_the_mean_of_one_minus_cosine_and_ignores_length():
    from hpd_toolkit.training.distill import prefix_cosine_distance

    generator = torch.Generator().manual_seed(0)
    predicted, goal = torch.randn(6, 8, generator=generator), torch.randn(6, 8, generator=generator)
    by_hand = np.mean([1 - np.dot(p, g) / np.linalg.norm(p) / np.linalg.norm(g)
                       for p, g in zip(predicted.numpy(), goal.numpy())])
    assert float(prefix_cosine_distance(predicted, goal, 6)) == pytest.approx(by_hand, rel=1e-5)
    scaled = predicted * torch.tensor([0.1, 1, 2, 3, 4, 50])[:, None]  # each vector's length is free
    assert float(prefix_cosine_distance(scaled, goal, 6)) == pytest.approx(by_hand, rel=1e-5)
    parts = sum(prefix_cosine_distance(predicted[i : i + 2], goal[i : i + 2], 6) for i in (0, 2, 4))
    assert float(parts) == pytest.approx(by_hand, rel=1e-5)  # micro-batches add their shares
    prefix = 2 * prefix_cosine_distance(predicted[:, :4], goal[:, :4], 6)
    both = prefix_cosine_distance(predicted, goal, 6, [8, 4], [1.0, 2.0])
    assert float(both) == pytest.approx(by_hand + float(prefix), rel=1e-5)


def check_trained_and_selected_by(config, figure, described):
    """Trains `config`; its own validation figure must fall by 30% and choose the checkpoint; returns the log."""
    distill(config)
    log = read_log(config)
    evaluations = [r for r in log if figure in r]
    assert evaluations[-1][figure] < 0.7 * evaluations[0][figure]
    record = json.loads((Path(config.output) / "distill_config.json").read_text())
    best = min(evaluations, key=lambda r: r[figure])
    assert record["best_step"] == best["step"] and record["settings"]["loss"] == config.loss
    assert described in record["selection"]
    return log


def test_cosine_loss_trains_and_selects_by_validation_cosine(models, tmp_path, capsys, monkeypatch):
    import hpd_toolkit.training.distill as distill_module

    mse_calls = []
    monkeypatch.setattr(distill_module, "prefix_mse", lambda *args: mse_calls.append(args))
    mse = config_for(models, tmp_path, epochs=1)
    assert config_for(models, tmp_path, epochs=1, loss="mse").run_dir() == mse.run_dir()  # older runs keep folders
    config = config_for(models, tmp_path, epochs=1, loss="cosine", select="valid-cosine")
    assert config.run_dir() != mse.run_dir()
    check_trained_and_selected_by(config, "valid_cosine_distance", "the lowest validation cosine distance")
    assert not mse_calls  # no training step used the MSE

    capsys.readouterr()
    err = run_distill(capsys, models, tmp_path, "--loss", "cosine")
    assert "--loss cosine leaves the vectors' lengths free" in err and "--select valid-cosine" in err


def test_similarity_loss_compares_pairwise_cosines_and_ignores_rotation_and_length():
    from hpd_toolkit.training.distill import prefix_similarity_mse

    generator = torch.Generator().manual_seed(0)
    predicted, goal = torch.randn(5, 8, generator=generator), torch.randn(5, 8, generator=generator)

    def by_hand(p, g):
        def cos(a, b):
            return np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)
        return np.mean([(cos(p[i], p[j]) - cos(g[i], g[j])) ** 2 for i in range(5) for j in range(5) if i != j])

    expected = by_hand(predicted.numpy(), goal.numpy())
    assert float(prefix_similarity_mse(predicted, goal)) == pytest.approx(expected, rel=1e-5)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, generator=generator))
    moved = (predicted @ rotation) * torch.tensor([0.1, 1, 2, 3, 40])[:, None]  # only the pairs' angles count
    assert float(prefix_similarity_mse(moved, goal)) == pytest.approx(expected, rel=1e-4)
    assert float(prefix_similarity_mse(goal @ rotation, goal)) == pytest.approx(0, abs=1e-10)
    assert float(prefix_similarity_mse(predicted, goal, block=2)) == pytest.approx(expected, rel=1e-5)  # in blocks
    both = prefix_similarity_mse(predicted, goal, [8, 4], [1.0, 2.0])
    assert float(both) == pytest.approx(expected + 2 * by_hand(predicted[:, :4].numpy(), goal[:, :4].numpy()),
                                        rel=1e-5)


def test_similarity_loss_trains_on_whole_batches_and_selects_by_validation_similarity(models, tmp_path, capsys,
                                                                                      monkeypatch):
    import hpd_toolkit.training.distill as distill_module

    batches, real = [], distill_module.prefix_similarity_mse
    monkeypatch.setattr(distill_module, "prefix_mse", lambda *args: pytest.fail("a training step used the MSE"))
    monkeypatch.setattr(distill_module, "prefix_similarity_mse",
                        lambda predicted, *rest: batches.append(len(predicted)) or real(predicted, *rest))
    config = config_for(models, tmp_path, epochs=1, loss="similarity", select="valid-similarity", micro_batch_size=8,
                        lr=5e-4)
    assert config.micro_batch_size < config.batch_size  # the pairs span micro-batches
    log = check_trained_and_selected_by(config, "valid_similarity_mse", "the lowest validation similarity MSE")
    steps, evaluations = [r["step"] for r in log if "loss" in r], [r for r in log if "valid_similarity_mse" in r]
    assert len(batches) >= steps[-1] + len(evaluations) and config.batch_size in batches  # whole batches trained

    capsys.readouterr()
    err = run_distill(capsys, models, tmp_path, "--loss", "similarity")
    assert "--loss similarity leaves the vectors themselves" in err and "--select valid-similarity" in err
    err = run_distill(capsys, models, tmp_path, "--loss", "similarity", "--select", "last", "--batch-size", "1")
    assert "--loss similarity compares the sentences of a batch in pairs" in err

def test_stop_after_start_validates_step_0_and_the_same_command_trains_on_from_it(models, tmp_path):
    from hpd_toolkit.training.distill import read_log_record

    config = config_for(models, tmp_path, epochs=1, head_init="lstsq", stop_after="start")
    assert distill(config) == config.run_dir() and not (tmp_path / "out").exists()
    log = read_log(config)
    assert [r["step"] for r in log] == [0] and read_log_record(config.run_dir(), 0) == log[0]
    assert [p.name for p in (config.run_dir() / "checkpoints").iterdir()] == ["step_000000000"]
    assert distill(config) == config.run_dir() and read_log(config) == log  # again: nothing more is done

    distill(config_for(models, tmp_path, epochs=1, head_init="lstsq"))  # trains on from the start
    resumed = read_log(config)
    assert resumed[0] == log[0] and [r["step"] for r in resumed].count(0) == 1 and resumed[-1]["step"] > 0
    straight = config_for(models, tmp_path / "straight", epochs=1, head_init="lstsq")
    distill(straight)  # the same run in one go: the same weights
    trained, direct = (load_file(str(Path(folder) / "model.safetensors")) for folder in (tmp_path / "out",
                                                                                     tmp_path / "straight" / "out"))
    assert trained.keys() == direct.keys() and all(torch.equal(trained[k], direct[k]) for k in trained)

# --- training speed options -------------------------------------------------------------------------

def test_bfloat16_training_and_frozen_embeddings_learn(models, tmp_path):
    config = config_for(models, tmp_path, epochs=1, student_dtype="bfloat16", freeze_embeddings=True)
    distill(config)
    evaluations = [r["valid_mse"] for r in read_log(config) if "valid_mse" in r]
    assert evaluations[-1] < 0.7 * evaluations[0]
    student = load_file(tmp_path / "out" / "model.safetensors")
    base = load_file(models / "student" / "model.safetensors")
    key = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(student[key], base[key])  # frozen
    assert not torch.equal(student["bert.encoder.layer.0.output.dense.weight"],
                           base["bert.encoder.layer.0.output.dense.weight"])
    assert student[key].dtype == torch.float32  # autocast trains float32 weights


def test_stop_after_teacher_caches_only_the_vectors(models, tmp_path, monkeypatch, capsys):
    config = config_for(models, tmp_path, stop_after="teacher", max_sentences=100)
    assert distill(config) == tmp_path / "out.work"
    work = tmp_path / "out.work"
    assert not (tmp_path / "out").exists() and not list(work.glob("run-*")) and not list(work.glob("projection-*"))
    assert TeacherStore(config.teacher_dir(config.teacher[0]), 120, 64).missing_chunks() == []
    calls = count_encodings(monkeypatch)
    distill(config_for(models, tmp_path, epochs=1, max_sentences=100))
    assert calls == []


# --- corpus -------------------------------------------------------------------------------------------

WIKI = ('<doc id="1" url="u" title="Town">\nTown\n\nTown is a small place in the north of the country. '
        'It had 1,200 people in 2010 according to the census. It lies on a river that floods every spring.\n'
        'The town was founded by settlers who came from the coast in 1850!\n</doc>\n')


def test_passages_and_mixed_units(tmp_path):
    (tmp_path / "wiki").mkdir()
    (tmp_path / "wiki" / "wiki_00").write_text(WIKI)
    sentences = list(read_corpus([tmp_path / "wiki"]))
    passages = list(read_corpus([tmp_path / "wiki"], unit="paragraph"))
    assert passages == [" ".join(sentences[:3])]  # a one-sentence paragraph is a sentence, not a passage
    assert list(read_corpus([tmp_path / "wiki"], unit="mixed")) == [*sentences[:3], passages[0], sentences[3]]
    long = " ".join(f"Sentence number {i} has exactly seven words here." for i in range(50))
    pieces = list(read_corpus([tmp_path / "long.txt"], unit="paragraph")) if False else None
    from hpd_toolkit.training.corpus import MAX_PASSAGE_WORDS, wiki_sentences

    pieces = list(wiki_sentences([long], unit="paragraph"))
    assert len(pieces) == 3 and all(len(p.split()) <= MAX_PASSAGE_WORDS for p in pieces)
    assert " ".join(pieces) == long  # whole sentences, in order, nothing lost


def test_line_separators_inside_sentences_do_not_split_them(tmp_path, models):
    text = "".join(f"sentence {i} holds\u2028a line separator\x0cand a form feed\x85here\n" for i in range(60))
    (tmp_path / "odd.txt").write_text(text, encoding="utf-8")
    train, valid, _ = prepare_sentences([tmp_path / "odd.txt"], valid_sentences=10)
    assert len(train) + len(valid) == 60 and all(len(s.splitlines()) == 1 for s in train)


def test_binary_file_in_a_corpus_folder_is_refused(models, tmp_path, capsys):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text((models / "corpus.txt").read_text())
    (folder / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(range(256)) * 20)
    err = run_distill(capsys, models, tmp_path, corpus=folder)
    assert "image.png" in err and "not UTF-8 text" in err


def test_a_corpus_is_recorded_by_content(models, tmp_path, capsys, monkeypatch):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text((models / "corpus.txt").read_text())
    distill(config_for(models, tmp_path, epochs=1, corpus=[str(corpus)]))
    monkeypatch.chdir(tmp_path)  # the same file by a relative path: the same corpus
    distill(config_for(models, tmp_path, epochs=1, corpus=["corpus.txt"], lr=2e-4))
    corpus.write_text(corpus.read_text().replace("cat", "cow"))  # edited in place
    capsys.readouterr()
    err = run_distill(capsys, models, tmp_path, "--chunk-size", "64", corpus=corpus)
    assert "was made with different settings (corpus:" in err and "to start fresh" in err


# --- work dir and output ----------------------------------------------------------------------------

def hold_lock(work, ready, release):
    import fcntl

    with open(os.path.join(work, ".lock"), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write("4242")
        handle.flush()
        ready.set()
        release.wait(30)


def test_a_second_run_on_the_same_work_dir_is_refused(models, tmp_path, capsys):
    (tmp_path / "out.work").mkdir()
    ready, release = multiprocessing.Event(), multiprocessing.Event()
    holder = multiprocessing.Process(target=hold_lock, args=(str(tmp_path / "out.work"), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        err = run_distill(capsys, models, tmp_path)
        assert "is in use by another hpd distill (pid 4242)" in err
    finally:
        release.set()
        holder.join()
    assert not (tmp_path / "out").exists()


def test_output_that_hpd_did_not_write_is_never_replaced(models, tmp_path, capsys, monkeypatch):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("years of work")
    err = run_distill(capsys, models, tmp_path)
    assert "is not empty and was not written by hpd" in err and "--overwrite" in err
    assert (tmp_path / "out" / "thesis.tex").read_text() == "years of work"
    assert not (tmp_path / "out.work").exists()  # refused before any work

    monkeypatch.chdir(tmp_path / "out")
    code = hpd_cli.main(["distill", "--teacher", str(models / "teacher"), "--student", str(models / "student"),
                         "--corpus", str(models / "corpus.txt"), "--output", ".", "--work-dir", str(tmp_path / "w")])
    assert code == 1 and "current directory" in capsys.readouterr().err
    assert (tmp_path / "out" / "thesis.tex").is_file()

    monkeypatch.chdir(tmp_path)
    config = config_for(models, tmp_path, epochs=1, overwrite=True)
    distill(config)
    assert not (tmp_path / "out" / "thesis.tex").exists() and (tmp_path / "out" / "model.safetensors").is_file()
    distill(config_for(models, tmp_path, epochs=1, lr=2e-4))  # our own output: replaced without --overwrite


def test_a_foreign_work_dir_is_refused(models, tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    err = run_distill(capsys, models, tmp_path, "--work-dir", str(tmp_path / "notes"))
    assert "is not an hpd distill work dir" in err and (tmp_path / "notes" / "todo.txt").is_file()


def test_a_teacher_typo_leaves_nothing_that_blocks_the_corrected_run(models, tmp_path, capsys):
    err = run_distill(capsys, models, tmp_path, "--teacher", str(tmp_path / "teachr"))
    assert "no such model folder" in err
    # run_distill puts the typo second; the config's own teacher is first: correct the whole command
    code = hpd_cli.main(["distill", "--teacher", str(models / "teacher"), "--student", str(models / "student"),
                         "--corpus", str(models / "corpus.txt"), "--output", str(tmp_path / "out"), "--dim", "8",
                         "--pca-sentences", "100", "--valid-sentences", "20", "--epochs", "1"])
    assert code == 0, capsys.readouterr().err


def test_dim_larger_than_cached_teacher_vectors(models, tmp_path, capsys):
    distill(config_for(models, tmp_path, stop_after="teacher"))
    capsys.readouterr()
    err = run_distill(capsys, models, tmp_path, "--dim", "30", "--chunk-size", "64")
    assert "larger than the teacher's embedding dimension (24)" in err


def test_a_work_dir_of_the_earlier_layout_is_upgraded_in_place(models, tmp_path, monkeypatch):
    config = config_for(models, tmp_path, epochs=1)
    distill(config)
    work = tmp_path / "out.work"
    teacher_dir = config.teacher_dir(config.teacher[0])
    chunks = {p.name: p.read_bytes() for p in teacher_dir.glob("*.npy")}
    # what an earlier version left: one teacher in work/teacher, the corpus and teacher named in settings.json
    os.replace(teacher_dir, work / "teacher")
    (work / "teacher" / "teacher.json").unlink()
    (work / "teachers").rmdir()
    settings = json.loads((work / "settings.json").read_text())
    settings.update(corpus=config.corpus, teacher=config.teacher[0], teacher_dtype="float32")
    settings.pop("unit")
    (work / "settings.json").write_text(json.dumps(settings))

    calls = count_encodings(monkeypatch)
    distill(config_for(models, tmp_path, epochs=1, lr=2e-4))
    assert calls == [] and not (work / "teacher").exists()
    assert {p.name: p.read_bytes() for p in teacher_dir.glob("*.npy")} == chunks
    assert "teacher" not in json.loads((work / "settings.json").read_text())
