"""A tiny stand-in for the Hugging Face Hub, so that pushes can be tested without the network.

It answers just what `HfApi.create_repo`, `create_branch`, `repo_info` and a commit (`create_commit`
or `upload_folder`) send over the classic LFS path, i.e. with `HF_HUB_DISABLE_XET=1` (the Xet path
talks to a separate storage service that this server does not imitate). The request and response
shapes were read from huggingface_hub 2.4: `hf_api.py` (create_repo, create_branch, model_info,
_validate_yaml), `_commit_api.py` (_fetch_upload_modes, _upload_files, _prepare_commit_payload,
_send_commit) and `lfs.py` (post_lfs_batch_info, lfs_upload).

    with HubServer() as hub:           # hub.url is http://127.0.0.1:<free port>
        ...push with HF_ENDPOINT=hub.url...
        hub.repos    # {repo_id: {"private": bool}}
        hub.commits  # [{"repo_id", "revision", "message", "description", "oid", "url", "files", "deleted"}]
        hub.files    # {repo_id: {branch: {path: bytes}}}: the tree of every branch after the last commit
        hub.tokens   # bearer tokens the API requests carried
        hub.requests # [(method, path, status)], to spot requests this server does not know (404)

`HubServer(fail_with=401)` (or 403, or any status) answers with that status and a Hub-like JSON
error body; `fail_only="commit"` limits that to one endpoint (names in `_ROUTES`), e.g. a token
that may create the repo but not write to it.
"""

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

# The Hub stores a file with LFS when the repo's .gitattributes says so (the default one lists the
# usual weight and archive extensions), when it is larger than 10 MB or when it looks binary.
LFS_EXTENSIONS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".h5", ".msgpack", ".npy", ".npz",
                  ".pkl", ".model", ".zip", ".gz", ".tar")
LFS_MIN_SIZE = 10 * 1024 * 1024

_REPO = r"(?P<repo>[^/]+/[^/]+)"
_REV = r"(?P<rev>[^/]+)"  # the client quotes revisions with safe="", so a revision is one path segment
_OID = r"(?P<oid>[0-9a-f]{64})"
# (method, path pattern, endpoint name used by `fail_only`, handler method)
_ROUTES = [
    ("POST", r"/api/repos/create", "create", "_create_repo"),
    ("GET", rf"/api/models/{_REPO}(?:/revision/{_REV})?", "info", "_repo_info"),
    ("POST", rf"/api/models/{_REPO}/branch/{_REV}", "branch", "_create_branch"),
    ("POST", r"/api/validate-yaml", "validate-yaml", "_validate_yaml"),
    ("POST", rf"/api/models/{_REPO}/preupload/{_REV}", "preupload", "_preupload"),
    ("POST", rf"/{_REPO}\.git/info/lfs/objects/batch", "lfs-batch", "_lfs_batch"),
    ("PUT", rf"/lfs-storage/{_OID}", "lfs-upload", "_lfs_put"),
    ("POST", rf"/lfs-verify/{_OID}", "lfs-verify", "_lfs_verify"),
    ("POST", rf"/api/models/{_REPO}/commit/{_REV}", "commit", "_commit"),
]
_FAILURE_MESSAGES = {
    401: "Invalid credentials in Authorization header",
    403: "You don't have the rights to write to this repository",
}


class _HubError(Exception):
    def __init__(self, status, message, code=None, **extra_body):
        super().__init__(message)
        self.status, self.message, self.code, self.extra_body = status, message, code, extra_body


class HubServer:
    def __init__(self, fail_with=None, fail_only=None):
        self.fail_with, self.fail_only = fail_with, fail_only
        self.repos, self.files, self.commits, self.tokens, self.requests = {}, {}, [], set(), []
        self.lfs_objects = {}  # sha256 hex -> bytes received by the LFS PUT
        self.url = None
        self._lock = threading.Lock()

    def __enter__(self):
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)  # port 0: the OS picks a free one
        self._httpd.daemon_threads = True
        self._httpd.hub = self
        self.url = f"http://127.0.0.1:{self._httpd.server_port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    # ---------------------------------------------------------------- dispatch

    def handle(self, method, path, headers, body):
        """Returns (status, json-able body, extra headers)."""
        for route_method, pattern, name, handler in _ROUTES:
            match = re.fullmatch(pattern, path)
            if route_method == method and match:
                break
        else:
            return 404, {"error": f"fake Hub: no route for {method} {path}"}, {}
        if self.fail_with and self.fail_only in (None, name):
            message = _FAILURE_MESSAGES.get(self.fail_with, f"fake Hub failure {self.fail_with}")
            return self.fail_with, {"error": message}, {"X-Error-Message": message}
        if name != "lfs-upload":  # the storage PUT carries no token on the real Hub either (pre-signed URL)
            auth = headers.get("Authorization", "")
            if not auth.startswith("Bearer "):
                return 401, {"error": "You must be authenticated to access this endpoint."}, {}
            self.tokens.add(auth[len("Bearer "):])
        params = {key: unquote(value) for key, value in match.groupdict().items() if value is not None}
        try:
            with self._lock:
                return 200, getattr(self, handler)(body=body, **params), {}
        except _HubError as err:
            extra = {"X-Error-Code": err.code} if err.code else {}
            return err.status, {"error": err.message, **err.extra_body}, {**extra, "X-Error-Message": err.message}

    def _branch(self, repo, rev):
        if repo not in self.repos:
            raise _HubError(404, "Repository not found", "RepoNotFound")
        if rev not in self.files[repo]:
            raise _HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return self.files[repo][rev]

    # ---------------------------------------------------------------- repos and branches

    def _create_repo(self, body):
        payload = json.loads(body)
        repo = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        if payload.get("type", "model") != "model":
            raise _HubError(400, "fake Hub: only model repos")
        if repo in self.repos:  # create_repo(exist_ok=True) still reads "url" from this answer
            raise _HubError(409, "You already created this model repo", url=f"{self.url}/{repo}")
        self.repos[repo] = {"private": payload.get("visibility") == "private"}
        self.files[repo] = {"main": {}}
        return {"url": f"{self.url}/{repo}", "name": repo, "id": hashlib.sha1(repo.encode()).hexdigest()[:24]}

    def _repo_info(self, body, repo, rev="main"):
        self._branch(repo, rev)
        heads = [c["oid"] for c in self.commits if c["repo_id"] == repo and c["revision"] == rev]
        return {"id": repo, "private": self.repos[repo]["private"], "sha": heads[-1] if heads else None,
                "siblings": [{"rfilename": path} for path in sorted(self.files[repo][rev])]}

    def _create_branch(self, body, repo, rev):
        start = json.loads(body or b"{}").get("startingPoint", "main")
        files = dict(self._branch(repo, start))
        if rev in self.files[repo]:
            raise _HubError(409, "Reference already exists")
        self.files[repo][rev] = files
        return {}

    # ---------------------------------------------------------------- commit protocol

    def _validate_yaml(self, body):
        # The real endpoint checks the README's metadata block; the client only needs this shape.
        return {"errors": [], "warnings": []}

    def _preupload(self, body, repo, rev):
        self._branch(repo, rev)
        files = json.loads(body)["files"]
        # No "oid" in the answer: the client would then skip files it believes unchanged.
        return {"files": [{"path": f["path"], "uploadMode": _upload_mode(f), "shouldIgnore": False} for f in files]}

    def _lfs_batch(self, body, repo):
        if repo not in self.repos:
            raise _HubError(404, "Repository not found", "RepoNotFound")
        objects = []
        for obj in json.loads(body)["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.lfs_objects:  # no "actions": the client skips content already stored
                entry["actions"] = {
                    "upload": {"href": f"{self.url}/lfs-storage/{obj['oid']}", "header": {}},
                    "verify": {"href": f"{self.url}/lfs-verify/{obj['oid']}"},
                }
            objects.append(entry)
        return {"transfer": "basic", "objects": objects}

    def _lfs_put(self, body, oid):
        if hashlib.sha256(body).hexdigest() != oid:
            raise _HubError(400, "fake Hub: LFS content does not match its sha256")
        self.lfs_objects[oid] = body
        return {}

    def _lfs_verify(self, body, oid):
        payload = json.loads(body)
        if oid not in self.lfs_objects or len(self.lfs_objects[oid]) != payload["size"]:
            raise _HubError(404, "fake Hub: LFS object missing or of another size")
        return {}

    def _commit(self, body, repo, rev):
        files = dict(self._branch(repo, rev))
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0]["key"] != "header":
            raise _HubError(400, "fake Hub: the commit payload must start with a header line")
        header, added, deleted = lines[0]["value"], {}, []
        for line in lines[1:]:  # applied to a copy: a rejected commit changes nothing
            key, value = line["key"], line["value"]
            if key == "file":
                added[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                content = self.lfs_objects.get(value["oid"])
                if content is None or len(content) != value.get("size", len(content)):
                    raise _HubError(400, f"fake Hub: LFS object {value['oid']} of {value['path']} was never uploaded")
                added[value["path"]] = content
            elif key == "deletedFile":
                files.pop(value["path"])
                deleted.append(value["path"])
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                deleted += [path for path in files if path.startswith(prefix)]
                files = {path: data for path, data in files.items() if not path.startswith(prefix)}
            else:
                raise _HubError(400, f"fake Hub: unknown commit line {key!r}")
        files.update(added)
        oid = hashlib.sha1(f"{repo}\0{rev}\0{len(self.commits)}\0{header['summary']}".encode()).hexdigest()
        self.files[repo][rev] = files
        self.commits.append({"repo_id": repo, "revision": rev, "message": header["summary"],
                             "description": header.get("description", ""), "oid": oid,
                             "url": f"{self.url}/{repo}/commit/{oid}", "files": added, "deleted": deleted})
        return {"success": True, "commitOid": oid, "commitUrl": self.commits[-1]["url"], "hookOutput": ""}


def _upload_mode(file):
    sample = base64.b64decode(file["sample"])  # the first 512 bytes of the file
    lfs = file["path"].endswith(LFS_EXTENSIONS) or file["size"] > LFS_MIN_SIZE or b"\0" in sample
    return "lfs" if lfs else "regular"


class _Handler(BaseHTTPRequestHandler):
    def _serve(self):
        hub = self.server.hub
        body = self._read_body()  # read before any answer, or a refused upload breaks the pipe
        path = urlsplit(self.path).path
        status, payload, headers = hub.handle(self.command, path, self.headers, body)
        data = json.dumps(payload).encode()
        with hub._lock:
            hub.requests.append((self.command, path, status))
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = _serve

    def _read_body(self):
        # huggingface_hub 2.4 sends Content-Length, even for file uploads; chunked is here for bodies of unknown size
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def log_message(self, *args):  # keep pytest output clean
        pass
