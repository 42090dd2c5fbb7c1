"""Matryoshka HPD: the prefix loss, a tiny Matryoshka distill run, and truncation through every loader and command."""

import json
import random
import warnings

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

import hpd_cli
from configuration_hpd import TruncationWarning
from conftest import SENTENCES, WORDS, tiny_model
from hpd_toolkit.eval.sts import spearman_x100
from hpd_inference import RANGES_FILE, load_ranges
from modeling_hpd import HPDModel
from test_distill import config_for, models, read_log, run_distill  # noqa: F401 (fixture)
from hpd_models import register_hpd_classes, save_hpd_folder
from hpd_inference import weights_sha256
from hpd_toolkit.training.distill import TeacherStore, distill, fit_projection, prefix_mse


def sts_pairs(seed, count=30):
    rng = random.Random(seed)
    sentence = lambda: " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 8))) + "."  # noqa: E731
    return [(sentence(), sentence(), round(rng.uniform(0, 5), 2)) for _ in range(count)]


def write_stsb(root, split, pairs):
    """STS-B in the SentEval layout: score in column 4, the sentences in 5 and 6."""
    folder = root / "STS" / "STSBenchmark"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"sts-{split}.csv").write_text("".join(f"g\tf\ty\t{i}\t{gold}\t{a}\t{b}\n"
                                                     for i, (a, b, gold) in enumerate(pairs)))
    return root


@pytest.fixture(scope="module")
def matryoshka_folder(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("matryoshka") / "model"
    save_hpd_folder(tiny_model(seed=3, embedding_dim=12, matryoshka_dims=[12, 6, 3]), tokenizer, folder)
    return folder


def unit(vectors):
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


# --- the loss and the architecture ----------------------------------------------------------------

def test_prefix_loss_is_the_weighted_sum_of_each_prefixs_mse():
    generator = torch.Generator().manual_seed(0)
    predicted, goal = torch.randn(6, 8, generator=generator), torch.randn(6, 8, generator=generator)
    mse = torch.nn.functional.mse_loss
    by_hand = 1.0 * mse(predicted, goal) + 0.5 * mse(predicted[:, :4], goal[:, :4]) + 2.0 * mse(predicted[:, :2],
                                                                                                 goal[:, :2])
    assert prefix_mse(predicted, goal, 6, [8, 4, 2], [1.0, 0.5, 2.0]) == pytest.approx(float(by_hand), rel=1e-6)
    # micro-batches each add their share of every prefix's mean over the whole batch
    parts = sum(prefix_mse(predicted[i : i + 2], goal[i : i + 2], 6, [8, 4, 2], [1.0, 0.5, 2.0]) for i in (0, 2, 4))
    assert float(parts) == pytest.approx(float(by_hand), rel=1e-6)
    # without sizes: the plain MSE, computed exactly as before Matryoshka existed (resumed runs stay bit-identical)
    assert torch.equal(prefix_mse(predicted, goal, 6), ((predicted - goal) ** 2).sum() / goal.numel())


def test_a_tanh_heads_prefix_is_the_output_of_the_prefix_head_and_pca_prefixes_are_pca(tokenizer):
    """tanh acts coordinate by coordinate, so the first k outputs depend only on the head's first k rows: the
    prefix of the student's output lives in the prefix of the target space, and nothing else has to change."""
    full, small = tiny_model(seed=5, embedding_dim=16), tiny_model(seed=6, embedding_dim=4)
    small.bert.load_state_dict(full.bert.state_dict())
    with torch.no_grad():
        small.projection.weight.copy_(full.projection.weight[:4])
        small.projection.bias.copy_(full.projection.bias[:4])
    with pytest.warns(TruncationWarning):  # `full` was not trained for 4: allowed, with a warning
        prefix = full.encode(SENTENCES, tokenizer=tokenizer, truncate_dim=4)
    np.testing.assert_allclose(prefix, small.encode(SENTENCES, tokenizer=tokenizer), atol=1e-6)
    # and the targets: the first k axes of the uncentred PCA-d are the PCA-k axes
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(400, 12)) @ rng.normal(size=(12, 12)) + 2.0
    (wide, _), (narrow, _) = fit_projection(vectors, 8, "pca"), fit_projection(vectors, 4, "pca")
    signs = np.sign((wide[:4] * narrow).sum(1))
    np.testing.assert_allclose(wide[:4], signs[:, None] * narrow, atol=1e-5)


# --- hpd distill --matryoshka-dims ------------------------------------------------------------------

def test_matryoshka_run_trains_and_logs_every_size(models, tmp_path, monkeypatch):
    import hpd_toolkit.training.distill as distill_module

    calls, real = [], distill_module.prefix_mse
    monkeypatch.setattr(distill_module, "prefix_mse",
                        lambda *args: calls.append(args[3:]) or real(*args))
    dev = write_stsb(tmp_path / "data", "dev", sts_pairs(1))
    config = config_for(models, tmp_path, epochs=1, matryoshka_dims="8,4,2", matryoshka_weights="1,0.5,2",
                        sts_dev=str(dev))
    output = distill(config)
    assert calls and all(c == ([8, 4, 2], [1.0, 0.5, 2.0]) for c in calls)  # every step used the prefix loss

    evaluations = [r for r in read_log(config) if "valid_mse" in r]
    sizes = {"valid_mse", "valid_mse_d4", "valid_mse_d2", "stsb_dev_spearman", "stsb_dev_spearman_d4",
             "stsb_dev_spearman_d2"}
    assert evaluations and all(sizes <= set(r) for r in evaluations)
    record = json.loads((output / "distill_config.json").read_text())
    assert record["settings"]["matryoshka_dims"] == [8, 4, 2]
    assert record["settings"]["matryoshka_weights"] == [1.0, 0.5, 2.0]
    assert record["selection"].endswith("at the full 8 dimensions")
    best = min(evaluations, key=lambda r: r["valid_mse"])  # selection still by the full size's validation MSE
    assert record["best_step"] == best["step"]
    model = HPDModel.from_pretrained(output)
    assert model.config.matryoshka_dims == [8, 4, 2]

    # the figures logged for the selected step are those of the model written, size by size
    valid = (tmp_path / "out.work" / "sentences" / "valid.txt").read_text().splitlines()
    projection = load_file(str(config.projection_path()))
    store = TeacherStore(config.teacher_dir(config.teacher[0]), len(valid), config.chunk_size)
    goal = store.rows(np.arange(len(valid))) @ projection["weight"].T + projection["bias"]
    predicted = model.encode(valid)
    pairs = sts_pairs(1)
    for k in (4, 2):
        by_hand = float(((predicted[:, :k] - goal[:, :k]) ** 2).mean())
        assert record["validation"][f"valid_mse_d{k}"] == pytest.approx(by_hand, rel=1e-3)
        e1 = model.encode([a for a, _, _ in pairs], truncate_dim=k)
        e2 = model.encode([b for _, b, _ in pairs], truncate_dim=k)
        assert record["validation"][f"stsb_dev_spearman_d{k}"] == pytest.approx(
            spearman_x100(e1, e2, [g for _, _, g in pairs]), abs=1e-3)


def test_matryoshka_is_a_run_of_its_own_and_plain_runs_keep_their_folder(models, tmp_path):
    plain = config_for(models, tmp_path)
    assert "matryoshka_dims" not in plain.run_settings()  # runs made before this option keep their run-<hash>
    same = config_for(models, tmp_path, matryoshka_dims=[8, 4])
    assert same.matryoshka_weights == [1.0, 1.0]
    assert same.run_dir() != plain.run_dir()
    assert config_for(models, tmp_path, matryoshka_dims="8,4", matryoshka_weights="1,1").run_dir() == same.run_dir()
    assert config_for(models, tmp_path, matryoshka_dims="8,4", matryoshka_weights="1,2").run_dir() != same.run_dir()


@pytest.mark.parametrize("flags, message", [
    (["--matryoshka-dims", "8,2,4"], "--matryoshka-dims 8,2,4 must be positive sizes in descending order"),
    (["--matryoshka-dims", "8,4,4"], "--matryoshka-dims 8,4,4 names a size twice"),
    (["--matryoshka-dims", "16,8,4"], "--matryoshka-dims 16,8,4 has a size larger than --dim 8"),
    (["--matryoshka-dims", "4,2"], "--matryoshka-dims 4,2 must start with --dim 8"),
    (["--matryoshka-dims", "8"], "needs the full --dim and at least one smaller size"),
    (["--matryoshka-dims", "8,x"], "--matryoshka-dims takes comma-separated integers"),
    (["--matryoshka-dims", "8,4,2", "--matryoshka-weights", "1,1"],
     "--matryoshka-weights needs one positive weight per size in --matryoshka-dims (3)"),
    (["--matryoshka-dims", "8,4", "--matryoshka-weights", "1,0"], "one positive weight per size"),
    (["--matryoshka-weights", "1,1"], "--matryoshka-weights needs --matryoshka-dims"),
])
def test_bad_matryoshka_settings_are_one_line_errors(models, tmp_path, capsys, flags, message):
    assert message in run_distill(capsys, models, tmp_path, *flags)


def test_matryoshka_needs_a_pca_projection(models, tmp_path, capsys):
    err = run_distill(capsys, models, tmp_path, "--matryoshka-dims", "24,12", "--projection", "none", "--dim", "24")
    assert "--matryoshka-dims needs a PCA projection" in err and "--projection pca" in err


# --- truncation: the loaders and the commands agree ---------------------------------------------------

def test_every_loader_and_command_truncates_alike(matryoshka_folder, tmp_path, capsys):
    from sentence_transformers import SentenceTransformer

    model = HPDModel.from_pretrained(matryoshka_folder)
    full = model.encode(SENTENCES)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncationWarning)  # 6 is a trained size: no warning anywhere
        np.testing.assert_allclose(model.encode(SENTENCES, truncate_dim=6), full[:, :6], atol=1e-6)
        # truncated first, then normalised (as sentence-transformers does), so the vectors are unit length
        np.testing.assert_allclose(model.encode(SENTENCES, truncate_dim=6, normalize_embeddings=True),
                                   unit(full[:, :6]), atol=1e-6)

        register_hpd_classes()
        st = SentenceTransformer(str(matryoshka_folder), truncate_dim=6)
        assert st.get_embedding_dimension() == 6
        np.testing.assert_allclose(st.encode(SENTENCES), full[:, :6], atol=1e-5)
        np.testing.assert_allclose(st.encode(SENTENCES, normalize_embeddings=True), unit(full[:, :6]), atol=1e-5)

        for flags, expected in (([], full[:, :6]), (["--normalize"], unit(full[:, :6]))):
            code = hpd_cli.main(["encode", "--model", str(matryoshka_folder), "--dim", "6", *flags, "--output",
                                 str(tmp_path / "e.npy"), *SENTENCES])
            assert code == 0 and capsys.readouterr().err.count("warning") == 0
            np.testing.assert_allclose(np.load(tmp_path / "e.npy"), expected, atol=1e-5)

        pairs = sts_pairs(2)
        data = write_stsb(tmp_path / "data", "test", pairs)
        code = hpd_cli.main(["eval", "sts", "--model", str(matryoshka_folder), "--data", str(data), "--tasks", "STS-B",
                             "--dim", "6", "--output", str(tmp_path / "sts.json")])
        assert code == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "sts.json").read_text())
    assert results["truncate_dim"] == 6 and results["embedding_dim"] == 6 and results["bytes_per_embedding"] == 24
    e1 = model.encode([a for a, _, _ in pairs], truncate_dim=6)
    e2 = model.encode([b for _, b, _ in pairs], truncate_dim=6)
    assert results["scores"]["STSBenchmark"] == pytest.approx(spearman_x100(e1, e2, [g for _, _, g in pairs]), abs=0.01)
    assert "first 6 dimensions" in capsys.readouterr().out  # the printed table says what was scored


def test_untrained_sizes_warn_and_impossible_ones_are_errors(matryoshka_folder, tokenizer, tmp_path, capsys):
    model = HPDModel.from_pretrained(matryoshka_folder)
    with pytest.warns(TruncationWarning, match="trained for 12, 6, 3 dimensions, not 5"):
        assert model.encode(SENTENCES, truncate_dim=5).shape == (len(SENTENCES), 5)
    with pytest.warns(TruncationWarning, match="records no Matryoshka dimensions"):
        tiny_model(seed=1, embedding_dim=12).encode(SENTENCES, tokenizer=tokenizer, truncate_dim=6)
    for bad, problem in ((13, "truncate_dim 13 is larger than the model's 12-d embeddings"),
                         (0, "truncate_dim must be a positive integer, not 0"), (-2, "not -2")):
        with pytest.raises(ValueError, match=f"{problem}.*choose truncate_dim from 1 to 12"):
            model.encode(SENTENCES, truncate_dim=bad)

    assert hpd_cli.main(["encode", "--model", str(matryoshka_folder), "--dim", "5", "the cat sleeps."]) == 0
    captured = capsys.readouterr()
    # one line, after transformers' weight-loading bar
    assert [line for line in captured.err.splitlines() if line.startswith("hpd")] == [
        "hpd encode: warning: the model was trained for 12, 6, 3 dimensions, not 5: its first 5 coordinates were not "
        "trained to be an embedding of their own, so expect lower quality than a model trained for that size."]
    assert len(captured.out.split()) == 5
    for command in (["encode", "the cat sleeps."], ["eval", "sts", "--data", str(tmp_path), "--tasks", "STS-B"]):
        for bad, problem in (("13", "--dim 13 is larger than the model's 12-d embeddings; choose --dim from 1 to 12."),
                             ("0", "--dim must be a positive integer, not 0; choose --dim from 1 to 12.")):
            write_stsb(tmp_path, "test", sts_pairs(3))
            assert hpd_cli.main([*command, "--model", str(matryoshka_folder), "--dim", bad]) == 1
            assert capsys.readouterr().err.splitlines()[-1] == f"hpd {command[0]}: error: {problem}"


def test_int8_ranges_of_a_truncated_model(matryoshka_folder, tmp_path):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(matryoshka_folder, folder)
    raw = np.arange(24, dtype=np.float32).reshape(2, 12)
    (folder / RANGES_FILE).write_text(json.dumps({"raw": raw.tolist(), "normalized": (raw / 100).tolist(),
                                                  "model_sha256": weights_sha256(folder)}))
    np.testing.assert_array_equal(load_ranges(folder, dim=6), raw[:, :6])  # the prefix of each coordinate's range
    np.testing.assert_array_equal(load_ranges(folder, dim=12), raw)
    with pytest.raises(ValueError, match="not of vectors cut to 6 and then normalised; drop --normalize"):
        load_ranges(folder, normalized=True, dim=6)
