"""training.hub_push against the fake Hub of tests/hub_server.py: never the real network.

huggingface_hub reads HF_HUB_OFFLINE, HF_HUB_DISABLE_XET and HF_HOME (the login cache) once, at
import, and `make test` imports it with HF_HUB_OFFLINE=1: the in-process tests set the environment
and patch those import-time copies; the fresh-interpreter tests check the environment alone.
"""

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import constants
from safetensors.numpy import save_file

from hub_server import HubServer
from hpd_toolkit.training.hub_push import NO_TOKEN, push_folder

REPO = Path(__file__).resolve().parent.parent
REPO_ID = "hpd-org/hpd-tiny"
README = "---\nlicense: apache-2.0\nlibrary_name: sentence-transformers\ntags:\n- hpd\n---\n\n# HPD tiny\n"


@pytest.fixture
def folder(tmp_path):
    """A small model folder: ~20 KB of random safetensors weights (an LFS file) and text files."""
    model = tmp_path / "model"
    (model / "1_Pooling").mkdir(parents=True)
    weights = np.random.default_rng(0).standard_normal((64, 80), dtype=np.float32)
    save_file({"encoder.weight": weights}, str(model / "model.safetensors"))
    (model / "config.json").write_text(json.dumps({"model_type": "hpd", "embedding_dim": 16}, indent=2))
    (model / "README.md").write_text(README)
    (model / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "WordPiece"}}))
    (model / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    return model


def tree(folder):
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def push_error(expected, *args, **kwargs):
    """The one-line message of the `expected` exception raised by push_folder."""
    with pytest.raises(expected) as info:
        url = push_folder(*args, **kwargs)
        print(f"reported success: {url}")
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    return message


# ---------------------------------------------------------------- successful pushes


@pytest.mark.parametrize("private, message", [(True, "Add HPD tiny"), (False, None)])
def test_push_uploads_every_file_in_one_commit(hub, folder, private, message):
    pushed = push_folder(folder, REPO_ID, private=private, commit_message=message)

    assert hub.repos == {REPO_ID: {"private": private}}
    assert len(hub.commits) == 1
    commit = hub.commits[0]
    assert commit["message"] == (message or "Upload model")
    assert commit["revision"] == "main" and commit["deleted"] == []
    assert pushed.url == f"{hub.url}/{REPO_ID}/commit/{commit['oid']}" == commit["url"]
    assert pushed.commit_sha == commit["oid"] and pushed.private is private
    assert hub.files[REPO_ID] == {"main": tree(folder)}  # exactly these files, byte for byte
    weights = (folder / "model.safetensors").read_bytes()
    assert hub.lfs_objects == {hashlib.sha256(weights).hexdigest(): weights}  # the weights took the LFS path
    assert hub.tokens == {"dummy"}


def test_push_to_a_revision_creates_that_branch(hub, folder):
    pushed = push_folder(folder, REPO_ID, revision="dev", commit_message="dev weights")

    assert [(c["revision"], c["message"]) for c in hub.commits] == [("dev", "dev weights")]
    assert pushed.url == hub.commits[0]["url"]
    assert hub.files[REPO_ID] == {"main": {}, "dev": tree(folder)}  # main untouched
    assert ("POST", f"/api/models/{REPO_ID}/branch/dev", 200) in hub.requests


def test_each_push_to_an_existing_repo_is_one_new_commit(hub, folder):
    first = push_folder(folder, REPO_ID)
    (folder / "config.json").write_text('{"model_type": "hpd", "embedding_dim": 32}')
    second = push_folder(folder, REPO_ID, commit_message="Wider head")

    assert [c["message"] for c in hub.commits] == ["Upload model", "Wider head"]
    assert [first.url, second.url] == [c["url"] for c in hub.commits] and first != second
    assert [first.commit_sha, second.commit_sha] == [c["oid"] for c in hub.commits]
    assert hub.files[REPO_ID]["main"] == tree(folder)



def test_git_and_download_metadata_are_left_out(hub, folder):
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / ".cache" / "huggingface").mkdir(parents=True)
    (folder / ".cache" / "huggingface" / "model.safetensors.metadata").write_text("abc\n")
    push_folder(folder, REPO_ID)

    assert set(hub.files[REPO_ID]["main"]) == {"model.safetensors", "config.json", "README.md", "tokenizer.json",
                                               "1_Pooling/config.json"}


def test_ignore_patterns_leave_out_local_only_files(hub, folder):
    (folder / "mteb" / "results").mkdir(parents=True)
    (folder / "mteb" / "results" / "STS12.json").write_text("{}")
    push_folder(folder, REPO_ID, ignore_patterns=["mteb/*"])

    assert set(hub.files[REPO_ID]["main"]) == {"model.safetensors", "config.json", "README.md", "tokenizer.json",
                                               "1_Pooling/config.json"}


def test_the_visibility_reported_is_the_repos_not_the_requested_one(hub, folder):
    push_folder(folder, REPO_ID, private=True)
    pushed = push_folder(folder, REPO_ID, private=False)  # create_repo leaves the existing private repo private

    assert pushed.private is True and hub.repos[REPO_ID] == {"private": True}


@pytest.mark.parametrize("source", ["argument", "HF_TOKEN", "login cache"])
def test_token_comes_from_the_argument_then_HF_TOKEN_then_the_login_cache(hub, hub_env, folder, source):
    Path(constants.HF_TOKEN_PATH).parent.mkdir(parents=True)
    Path(constants.HF_TOKEN_PATH).write_text("cached-token")
    if source == "login cache":
        hub_env.delenv("HF_TOKEN")
    push_folder(folder, REPO_ID, token="arg-token" if source == "argument" else None)

    assert hub.tokens == {{"argument": "arg-token", "HF_TOKEN": "dummy", "login cache": "cached-token"}[source]}


# ---------------------------------------------------------------- refusals, each one line and no success


@pytest.mark.parametrize("status, expected", [
    (401, "the Hub rejected the token (401 Unauthorized)"),
    (403, f"no write access to {REPO_ID} (403 Forbidden)"),
])
def test_token_refused_by_the_hub(hub_env, folder, status, expected):
    with HubServer(fail_with=status) as hub:
        hub_env.setenv("HF_ENDPOINT", hub.url)
        message = push_error(ValueError, folder, REPO_ID)
    assert expected in message
    assert hub.repos == {} and hub.commits == []


def test_commit_refused_after_the_repo_was_created(hub_env, folder):
    with HubServer(fail_with=403, fail_only="commit") as hub:  # may create the repo, not write to it
        hub_env.setenv("HF_ENDPOINT", hub.url)
        message = push_error(ValueError, folder, REPO_ID)
    assert message.startswith(f"the commit to {REPO_ID} (main) failed and nothing was committed:")
    assert "(403 Forbidden)" in message
    assert REPO_ID in hub.repos and hub.commits == [] and hub.files[REPO_ID] == {"main": {}}


def test_private_push_into_an_existing_public_repo_is_refused(hub, folder):
    push_folder(folder, REPO_ID, private=False)
    message = push_error(ValueError, folder, REPO_ID, private=True)

    assert message.startswith(f"{REPO_ID} already exists and is public")
    assert len(hub.commits) == 1


def test_nothing_listening(hub_env, folder):
    with socket.socket() as sock:  # a port that was free a moment ago, now with nothing behind it
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    hub_env.setenv("HF_ENDPOINT", endpoint)
    message = push_error(ConnectionError, folder, REPO_ID)

    assert message.startswith(f"cannot reach the Hub at {endpoint} (")


def test_no_token_at_all(hub, hub_env, folder):
    hub_env.delenv("HF_TOKEN")  # and HF_HOME (the login cache) is an empty folder
    assert push_error(ValueError, folder, REPO_ID) == NO_TOKEN
    assert hub.requests == []


def test_offline_mode(hub, hub_env, folder):
    hub_env.setenv("HF_HUB_OFFLINE", "1")
    assert "unset HF_HUB_OFFLINE" in push_error(ValueError, folder, REPO_ID)
    assert hub.requests == []


@pytest.mark.parametrize("repo_id", ["hpd-tiny", "a/b/c", "hpd-org/hpd tiny", "hpd org/x", "hpd-org/", "/hpd-tiny",
                                     "hpd-org//hpd-tiny", "hpd-org/hpd-tiny.git", "hpd-org/-tiny", "", None])
def test_malformed_repo_ids(hub, folder, repo_id):
    message = push_error(ValueError, folder, repo_id)

    assert message.startswith(f"repo id {repo_id!r} is not a Hub id of the form ORG/NAME")
    assert hub.requests == []


def test_not_a_folder(hub, tmp_path):
    (tmp_path / "empty").mkdir()
    assert "not a folder" in push_error(ValueError, tmp_path / "missing", REPO_ID)
    assert "holds no files" in push_error(ValueError, tmp_path / "empty", REPO_ID)
    assert hub.requests == []


# ---------------------------------------------------------------- a fresh interpreter, configured by the environment only

PUSH = """
import sys
from hpd_toolkit.training.hub_push import push_folder
try:
    print("URL", push_folder(sys.argv[1], sys.argv[2], private=True, commit_message="from env").url)
except (ValueError, OSError) as err:
    print("ERROR", type(err).__name__, err)
"""


def push_in_fresh_python(folder, tmp_path, **env):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE_", "TRANSFORMERS_"))}
    full_env = {**base, "HF_HOME": str(tmp_path / "empty_hf_home"), "HF_HUB_DISABLE_XET": "1",
                "HF_HUB_DISABLE_PROGRESS_BARS": "1", **env}
    done = subprocess.run([sys.executable, "-c", PUSH, str(folder), REPO_ID], capture_output=True, text=True,
                          env=full_env, cwd=REPO, timeout=60)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return done.stdout.strip()


def test_environment_alone_configures_a_push(folder, tmp_path):
    with HubServer() as hub:
        out = push_in_fresh_python(folder, tmp_path, HF_ENDPOINT=hub.url, HF_TOKEN="dummy")

    assert out == f"URL {hub.commits[0]['url']}"
    assert hub.repos == {REPO_ID: {"private": True}} and len(hub.commits) == 1
    assert hub.files[REPO_ID]["main"] == tree(folder) and hub.tokens == {"dummy"}


@pytest.mark.parametrize("env, expected", [
    ({}, f"ERROR ValueError {NO_TOKEN}"),  # no HF_TOKEN and an empty HF_HOME: no login cache
    ({"HF_TOKEN": "dummy", "HF_HUB_OFFLINE": "1"}, "ERROR ValueError pushing needs the Hugging Face Hub"),
])
def test_environment_alone_refuses_a_push(folder, tmp_path, env, expected):
    with HubServer() as hub:
        out = push_in_fresh_python(folder, tmp_path, HF_ENDPOINT=hub.url, **env)

    assert out.startswith(expected) and "\n" not in out
    assert hub.requests == []
