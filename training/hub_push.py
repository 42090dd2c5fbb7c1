"""Publishes a model folder (an HPD folder, typically) to the Hugging Face Hub in one commit.

Only `huggingface_hub.HfApi` talks to the Hub. Every failure becomes an exception with a one-line
message: ValueError for what the user must fix (repo id, token, offline mode, permissions),
ConnectionError (an OSError) when no answer came back, OSError for other refusals from the Hub.
Nothing is reported as pushed unless the commit exists.

The endpoint is `HF_ENDPOINT` read when `push_folder` is called (huggingface_hub itself reads it
once, at import), so a test or a mirror can redirect a push without re-importing anything.
"""

import importlib
import os
from pathlib import Path
from typing import NamedTuple

from huggingface_hub import CommitOperationAdd, HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects, validate_repo_id

from hpd_toolkit.training.output_dir import MARKER

NO_TOKEN = "no Hugging Face token: set HF_TOKEN or run `hf auth login`, then push again."
OFFLINE = ("pushing needs the Hugging Face Hub but offline mode is on: unset HF_HUB_OFFLINE "
           "(and TRANSFORMERS_OFFLINE), then push again.")


class Pushed(NamedTuple):
    url: str  # the commit's page
    commit_sha: str  # the revision that now holds the folder
    private: bool  # the repository's visibility after the push


def push_folder(folder, repo_id, *, private=False, revision="main", commit_message=None, token=None,
                ignore_patterns=()) -> Pushed:
    """Uploads every file of `folder` to the Hub model repo `repo_id` in ONE commit; returns what was pushed.

    The repo is created if missing (`private` applies to a new repo; pushing with `private=True` to an
    existing public repo is refused), and so is the branch `revision`, started from main.
    Like `upload_folder`, `.git/` and `.cache/huggingface/` (download metadata) are left out, and so are
    the toolkit's own output marker (`hpd_toolkit.training.output_dir.MARKER`) and `ignore_patterns` (fnmatch, as
    huggingface_hub's `ignore_patterns`). If the Hub already holds every file unchanged, no commit is made
    and the head commit is returned.
    """
    check_repo_id(repo_id)
    folder = Path(folder).expanduser().resolve()
    operations = _operations(folder, ignore_patterns)
    # Checked before any request: with offline mode on, huggingface_hub refuses every request anyway.
    if constants.is_offline_mode() or _is_true(os.environ.get("HF_HUB_OFFLINE")):
        raise ValueError(OFFLINE)
    token = token or get_token()  # get_token(): HF_TOKEN, then the login cache of `hf auth login`
    if not token:
        raise ValueError(NO_TOKEN)
    endpoint = hub_endpoint()
    api = HfApi(endpoint=endpoint, token=token)

    step = f"creating the repo {repo_id}"
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        # create_repo leaves an existing repo as it is: never let private=True publish into a public one.
        step = f"reading the visibility of {repo_id}"
        is_private = bool(api.repo_info(repo_id, repo_type="model").private)
        if private and not is_private:
            raise ValueError(f"{repo_id} already exists and is public: refusing to push with private=True; "
                             "make it private on the Hub or push with private=False.")
        step = f"creating the branch {revision!r} of {repo_id}"
        if revision != "main":
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
    except Exception as exc:
        raise _one_line(exc, endpoint, repo_id, step) from _cause(exc)

    # create_commit, not upload_folder: with hf_xet installed (the default), upload_folder streams
    # large folders as several commits ("... (part 2)"), and a failure midway leaves the first ones
    # in place. create_commit uploads everything first and then makes exactly one commit, so a
    # failure anywhere in it leaves the branch untouched.
    try:
        info = api.create_commit(repo_id, operations, commit_message=commit_message or f"Upload {folder.name}",
                                 repo_type="model", revision=revision)
    except Exception as exc:
        error = _one_line(exc, endpoint, repo_id, None)
        note = (f"the commit to {repo_id} ({revision}) failed and nothing was committed"
                if not isinstance(error, ConnectionError) else
                f"the commit to {repo_id} ({revision}) failed; if the connection dropped while the Hub "
                "was committing, check the repo before pushing again")
        raise type(error)(f"{note}: {error}") from _cause(exc)
    return Pushed(info.commit_url, info.oid, is_private)


def hub_endpoint():
    """The Hub that pushes go to: HF_ENDPOINT as it is now, else huggingface_hub's default."""
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def check_repo_id(repo_id, what="repo id"):
    """Refuses, in one line naming `what` (e.g. the flag that gave it), anything but a Hub id ORG/NAME."""
    # validate_repo_id also accepts a bare NAME (the Hub puts it under the token's user): require
    # ORG/NAME so that where a push lands never depends on whose token is used.
    try:
        if not isinstance(repo_id, str) or repo_id.count("/") != 1:
            raise ValueError
        validate_repo_id(repo_id)
    except ValueError:  # huggingface_hub's HFValidationError is one
        raise ValueError(f"{what} {repo_id!r} is not a Hub id of the form ORG/NAME: use e.g. my-org/hpd-minilm "
                         "(letters, digits, '-', '_' and '.', at most 96 characters).") from None


def files_to_push(folder, ignore_patterns=()):
    """{path in the repo: local path} of what `push_folder(folder, ..., ignore_patterns=...)` uploads."""
    folder = Path(folder)
    files = {path.relative_to(folder).as_posix(): path for path in sorted(folder.rglob("*")) if path.is_file()}
    kept = filter_repo_objects(files, ignore_patterns=[*DEFAULT_IGNORE_PATTERNS, MARKER, f"*/{MARKER}",
                                                       *ignore_patterns])
    return {name: files[name] for name in kept}


def _operations(folder, ignore_patterns=()):
    if not folder.is_dir():
        raise ValueError(f"cannot push {folder}: not a folder")
    files = files_to_push(folder, ignore_patterns)
    if not files:  # an empty commit would be skipped and the old head reported as if pushed
        raise ValueError(f"cannot push {folder}: it holds no files")
    return [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in files.items()]


def _one_line(exc, endpoint, repo_id, step):
    """The exception to raise for `exc`, with a one-line message (`step`: what was being done, or None)."""
    http = _find(exc, HfHubHTTPError)
    status = http.response.status_code if http is not None and http.response is not None else None
    if status == 401:
        return ValueError("the Hub rejected the token (401 Unauthorized): it is invalid or expired; "
                          "set HF_TOKEN or run `hf auth login` again.")
    if status == 403:
        return ValueError(f"the token has no write access to {repo_id} (403 Forbidden): use a token with "
                          "write access to that namespace, or push to one you own.")
    prefix = f"{step} failed: " if step else ""
    if status is not None:
        detail = http.server_message or str(http)
        return OSError(f"{prefix}the Hub answered {status}: {_flat(detail)}")
    transport = _find(exc, _transport_errors())
    if transport is not None:
        return ConnectionError(f"cannot reach the Hub at {endpoint} ({type(transport).__name__}: {_flat(transport)})")
    if isinstance(exc, ValueError):  # e.g. README.md metadata the Hub rejects, or our own checks
        return ValueError(_flat(exc))
    return OSError(f"{prefix}{type(exc).__name__}: {_flat(exc)}")


def _transport_errors():
    # A TransportError means no HTTP answer came back (refused, DNS, TLS, timeout, dropped).
    # huggingface_hub 2.x sends requests with httpx2, 1.x with httpx.
    classes = []
    for name in ("httpx2", "httpx"):
        try:
            classes.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(classes)


def _find(exc, classes):
    """`exc` or the first exception it was raised from that is an instance of `classes`."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if classes and isinstance(exc, classes):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _cause(exc):
    # Classified errors say everything in their line: drop the chained traceback. Keep the cause of
    # unexpected ones for debugging.
    known = _find(exc, (HfHubHTTPError, *_transport_errors())) is not None or isinstance(exc, ValueError)
    return None if known else exc


def _flat(text):
    return " ".join(str(text).split())


def _is_true(value):
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}
