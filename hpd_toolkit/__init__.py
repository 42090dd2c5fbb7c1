"""hpd-toolkit's import name: `hpd_toolkit.training` and `hpd_toolkit.eval` are the repository's training/ and eval/.

A wheel holds both folders inside this package (pyproject.toml's package-dir), so site-packages gets no generic
top-level `training` or `eval`. In a clone, this package's path also covers the repository root, where the two
folders are, so the same imports work with or without `pip install -e .` (README, "Layout").
"""

from pathlib import Path

if not (Path(__file__).resolve().parent / "training").is_dir():  # a clone, not an installed wheel
    __path__.append(str(Path(__file__).resolve().parent.parent))
