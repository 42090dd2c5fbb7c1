"""The installed import names: a wheel puts only hpd-named modules into site-packages (README, "Layout")."""

import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile

from conftest import REPO

INSTALLED = {"hpd_toolkit", "hpd_cli", "hpd_inference", "hpd_models", "modeling_hpd", "configuration_hpd"}
NOT_CODE = {".venv", ".git", "models", "releases", "docs"}


def test_no_code_imports_the_bare_folder_names():
    """`training` and `eval` name folders, not modules: installed, a bare import would find another project's
    package of that name (or none); in a clone it would load a second copy of the module."""
    bare = re.compile(r"^\s*(from|import) (training|eval)\b", re.M)
    found = [f"{path.relative_to(REPO)}:{text[: match.start()].count(chr(10)) + 1}"
             for path in REPO.rglob("*.py") if not NOT_CODE & set(path.relative_to(REPO).parts)
             for text in [path.read_text(encoding="utf-8")] for match in bare.finditer(text)]
    assert not found, f"import hpd_toolkit.training / hpd_toolkit.eval instead: {found}"


def test_imports_point_one_way():
    """training/ uses eval/ (STS-B dev, the task table) and both use hpd_models (model I/O); nothing below imports
    what is above it, so there is no import cycle."""
    above = {"eval": ("hpd_toolkit.training",), "hpd_models.py": ("hpd_toolkit.",), "hpd_inference.py": ("hpd_",),
             "modeling_hpd.py": ("hpd_",), "configuration_hpd.py": ("hpd_",)}
    imports = re.compile(r"^\s*(?:from|import) ([\w.]+)", re.M)
    found = []
    for name, forbidden in above.items():
        for path in [REPO / name] if name.endswith(".py") else sorted((REPO / name).glob("*.py")):
            found += [f"{path.relative_to(REPO)} imports {module}"
                      for module in imports.findall(path.read_text(encoding="utf-8")) if module.startswith(forbidden)]
    assert not found, found


def test_the_wheel_installs_only_hpd_names_and_works_without_the_clone(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", *(f"{module}.py" for module in INSTALLED - {"hpd_toolkit"})):
        shutil.copy(REPO / name, source / name)
    for folder in ("hpd_toolkit", "training", "eval"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    built = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp_path / "dist",
                            source], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("hpd_toolkit-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0].removesuffix(".py") for name in names if ".dist-info/" not in name} == INSTALLED
    assert {"hpd_toolkit/training/convert.py", "hpd_toolkit/eval/sts.py", "modeling_hpd.py"} <= set(names)

    # The installed wheel alone, away from the clone: -S reads no .pth file, so no editable install of this clone.
    installed = subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", tmp_path / "site", wheel],
                               capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-3000:]
    code = ("import importlib.util, hpd_cli, hpd_models, hpd_toolkit.eval.sts, hpd_toolkit.training.distill\n"
            "print(hpd_toolkit.__path__, hpd_toolkit.eval.sts.__file__)\n"
            "print([importlib.util.find_spec(name) for name in ('training', 'eval')])\n"
            "hpd_cli.build_parser()")
    result = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path,
                            env={"PYTHONPATH": f"{tmp_path / 'site'}:{sysconfig.get_paths()['purelib']}",
                                 "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    site = tmp_path / "site" / "hpd_toolkit"
    assert result.stdout.splitlines() == [f"[{str(site)!r}] {site / 'eval' / 'sts.py'}", "[None, None]"]
