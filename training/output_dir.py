"""Output folders: never delete or overwrite what the toolkit did not write.

Every folder the toolkit writes gets a hidden MARKER file, so a later run may replace it. Anything else
that is not empty is refused unless the user passes --overwrite. A folder is built in a temporary sibling
and swapped into place only when complete, so a failed or interrupted run leaves the old one as it was.
"""

import contextlib
import os
import secrets
import shutil
from pathlib import Path

MARKER = ".hpd-toolkit"
MARKER_TEXT = "Written by the hpd toolkit: hpd may replace this folder. Not uploaded by hpd release --push.\n"


def check_target(target, *, overwrite=False, sources=()) -> None:
    """Raises ValueError when writing the folder `target` could destroy something it must not."""
    target = Path(target).expanduser().resolve()
    for source in sources:
        source = Path(source).expanduser().resolve()
        if target == source or source in target.parents:
            raise ValueError(f"{target} is {'the source' if target == source else 'inside the source'} {source}; "
                             "choose an output folder outside it.")
        if target in source.parents:
            raise ValueError(f"the source {source} is inside {target}, which would be replaced; choose an output "
                             "folder that does not hold the source.")
    if target == Path.cwd() or target in Path.cwd().parents:
        raise ValueError(f"{target} holds the current directory; choose another output folder.")
    if target.exists() and not target.is_dir():
        raise ValueError(f"{target} is a file, not a folder; choose another output path.")
    if target.is_dir() and any(target.iterdir()) and not (target / MARKER).is_file() and not overwrite:
        raise ValueError(f"{target} is not empty and was not written by hpd; choose another folder or pass --overwrite.")


@contextlib.contextmanager
def replace_folder(target, *, overwrite=False, sources=()):
    """Yields a fresh temporary folder beside `target`; on success it becomes `target` (marked as ours).

    On an exception (KeyboardInterrupt included) the temporary folder is removed and `target` is untouched."""
    check_target(target, overwrite=overwrite, sources=sources)
    target = Path(target).expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
    temporary.mkdir()
    try:
        yield temporary
        (temporary / MARKER).write_text(MARKER_TEXT, encoding="utf-8")
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if target.exists():
        old = target.parent / f".{target.name}.{secrets.token_hex(4)}.old"
        os.replace(target, old)
        os.replace(temporary, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(temporary, target)


def write_atomic(path, content):
    """Writes `content` (text, or a function that writes a file at the path it is given) to a hidden sibling,
    then renames it to `path`: a reader, or a run resumed after a kill, never finds half a file there."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        content(temporary) if callable(content) else temporary.write_text(content, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
