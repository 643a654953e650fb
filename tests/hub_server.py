"""A small fake Hugging Face Hub, served over real HTTP on loopback, for tests.

Why: pushing to and pulling from the Hub must be tested with the real `huggingface_hub` client
(and `transformers` / `peft` on top of it), but tests have no internet and no Hub account. This
module fakes the part of the Hub's HTTP API that those clients use, keeps everything in memory,
and runs in a background thread of the test process. Point a client at it with `HF_ENDPOINT`.

    server = HubServer(token="hf_test_token")   # starts on 127.0.0.1, random free port
    server.url        # "http://127.0.0.1:PORT": the value for HF_ENDPOINT
    server.repos      # {repo_id: {"private": bool, "branches": {name: {path: bytes}}}}
    server.requests   # [(method, path-without-query), ...] in arrival order
    server.errors     # tracebacks of requests the fake hub itself crashed on (answered 500)
    server.create_repo("tester/x", private=True); server.commit("tester/x", {"a.txt": b"hi"})  # seeding
    server.close()    # or use it as a context manager: `with HubServer() as server: ...`

huggingface_hub reads its settings at import, so run clients in a subprocess whose environment has
HF_ENDPOINT=server.url, HF_HOME=<fresh temp dir>, HF_TOKEN=<token> (or none, for anonymous use),
HF_HUB_DISABLE_XET=1, and neither HF_HUB_OFFLINE nor TRANSFORMERS_OFFLINE.

`python tests/hub_server.py [--token TOKEN]` serves until killed, for manual checks.

What it fakes (model repos only, `namespace/name` ids):
  GET  /api/whoami-v2                                     user "tester", member of org "org"
  POST /api/repos/create, DELETE /api/repos/delete        409 when the repo exists
  POST /api/validate-yaml                                 accepts any README.md
  GET  /api/agent-harnesses                               empty registry (the client asks for it)
  GET  /api/models/{repo}[/revision/{rev}]                model info with siblings and sha
  GET  /api/models/{repo}/tree/{rev}[/{path}]             files and folders, `recursive` honoured
  GET  /api/models/{repo}/refs                            branches
  POST /api/models/{repo}/branch/{branch}                 `startingPoint` honoured, 409 if exists
  POST /api/models/{repo}/preupload/{rev}                 always "regular": content goes inline
  POST /api/models/{repo}/commit/{rev}                    NDJSON: file, deletedFile, deletedFolder
  HEAD/GET /{repo}/resolve/{rev}/{path}                   X-Repo-Commit, ETag, Content-Length, Range

Every file is uploaded "regular" (base64 inside the commit), whatever its size: the client accepts
that, so no LFS or Xet transfer is ever needed. Downloads never carry X-Xet-* headers, so the
client downloads with plain HTTP GET. This works whether or not the client's Xet support is on
(with hf_xet installed, `upload_folder` goes through its pipeline, which also only calls preupload
and commit here); set HF_HUB_DISABLE_XET=1 in clients anyway, for the simplest code path.

Auth, as on the real Hub: a request carrying a wrong token gets 401 {"error": "Invalid credentials
in Authorization header"}; writes need the right token (401 otherwise); private repos are invisible
without it (401 + X-Error-Code: RepoNotFound); public repos are readable by anyone. Revisions are
branch names or commit shas; unknown ones get 404 + RevisionNotFound, missing files 404 +
EntryNotFound. Pull requests and LFS objects are not supported (400).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

USER = "tester"
ORGS = ("org",)


def git_sha1(data: bytes) -> str:
    """The git blob id of `data`: what the Hub uses as ETag and oid of regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


class HubError(Exception):
    """An HTTP error answer: status, {"error": message, **body}, optional X-Error-Code and headers."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None, **body):
        super().__init__(message)
        self.status, self.message, self.code, self.headers, self.body = status, message, code, headers or {}, body


class HubServer:
    """The fake Hub. Starts serving in a daemon thread as soon as it is created."""

    def __init__(self, token: str = "hf_test_token", host: str = "127.0.0.1", port: int = 0):
        self.token = token
        self.repos: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.errors: list[str] = []  # tracebacks of requests that crashed the fake hub (answered 500)
        self._commits: dict[str, tuple[str, dict[str, bytes]]] = {}  # sha -> (repo_id, files snapshot)
        self._heads: dict[str, dict[str, str]] = {}  # repo_id -> {branch: sha}
        self._lock = threading.RLock()
        self._httpd = ThreadingHTTPServer((host, port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.hub = self
        self.url = f"http://{host}:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving and free the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "HubServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # State helpers, also for tests to seed repos without a client. Read `repos` freely, but change it
    # through these (or over HTTP): commit shas are kept alongside it.
    def create_repo(self, repo_id: str, private: bool = False) -> None:
        """Create an empty repo with a `main` branch (raises HubError 409 if it exists)."""
        with self._lock:
            if repo_id in self.repos:  # the client reads "url" from this answer too, with exist_ok=True
                raise HubError(409, "You already created this model repo", url=f"{self.url}/{repo_id}")
            self.repos[repo_id] = {"private": bool(private), "branches": {"main": {}}}
            self._heads[repo_id] = {}
            self._record(repo_id, "main", {}, "initial commit")

    def commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main", deletions=()) -> str:
        """Add/overwrite `files` and delete `deletions` on `branch`; return the new commit sha."""
        with self._lock:
            new = dict(self.repos[repo_id]["branches"][branch])
            for path in deletions:
                new.pop(path, None)
            new.update(files)
            return self._record(repo_id, branch, new, "commit")

    def _record(self, repo_id: str, branch: str, files: dict[str, bytes], summary: str) -> str:
        parent = self._heads[repo_id].get(branch, "")
        digest = hashlib.sha1(f"{repo_id}\n{branch}\n{parent}\n{summary}\n{len(self._commits)}".encode())
        for path in sorted(files):
            digest.update(f"{path}\0{git_sha1(files[path])}\n".encode())
        sha = digest.hexdigest()
        self._commits[sha] = (repo_id, dict(files))
        self._heads[repo_id][branch] = sha
        self.repos[repo_id]["branches"][branch] = files
        self.repos[repo_id].setdefault("messages", []).append(summary)
        return sha

    def _resolve(self, repo_id: str, revision: str) -> tuple[str, dict[str, bytes]]:
        """(commit sha, files) of a branch name or a commit sha of `repo_id`."""
        if revision in self._heads[repo_id]:
            return self._heads[repo_id][revision], self.repos[repo_id]["branches"][revision]
        if self._commits.get(revision, ("",))[0] == repo_id:
            return revision, self._commits[revision][1]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length
    server_version = "FakeHub/1.0"

    def log_message(self, format, *args) -> None:  # quiet: tests read `server.requests` instead
        pass

    @property
    def hub(self) -> HubServer:
        return self.server.hub

    # Plumbing
    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        self.hub.requests.append((self.command, split.path))
        self.body = self._read_body()
        try:
            self.authed = self._check_token()
            segments = [unquote(s) for s in split.path.split("/")[1:]]
            with self.hub._lock:
                self._route(segments)
        except HubError as error:
            self._send_json(error.status, {"error": error.message, **error.body}, error.headers, code=error.code)
        except Exception as error:  # a bug here must answer 500, not hang or kill the thread
            self.hub.errors.append(traceback.format_exc())
            self._send_json(500, {"error": f"fake hub crashed: {error!r}"})

    do_GET = do_HEAD = do_POST = do_DELETE = _dispatch

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _check_token(self) -> bool:
        header = self.headers.get("Authorization")
        if header is None:
            return False
        if header != f"Bearer {self.hub.token}":
            message = "Invalid credentials in Authorization header"
            raise HubError(401, message, headers={"X-Error-Message": message})
        return True

    def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(len(body)))  # for HEAD too: the size of the GET body
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, payload, headers: dict | None = None, code: str | None = None) -> None:
        headers = {"Content-Type": "application/json", **(headers or {})}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, json.dumps(payload).encode(), headers)

    def _json_body(self) -> dict:
        try:
            return json.loads(self.body or b"{}")
        except ValueError:
            raise HubError(400, "Request body is not valid JSON") from None

    def _need(self, method: str) -> None:
        if self.command != method:
            raise HubError(405, f"Method {self.command} not allowed here")

    def _repo(self, repo_id: str, write: bool = False) -> dict:
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo["private"] and not self.authed):
            raise HubError(404 if self.authed else 401, "Repository not found", "RepoNotFound")
        if write and not self.authed:
            raise HubError(401, "You must be authenticated to write to this repo")
        return repo

    # Routing: `self._need(METHOD)` raises 405 for another method, else returns None and `or` goes on.
    def _route(self, seg: list[str]) -> None:
        if seg == ["api", "whoami-v2"]:
            return self._whoami()
        if seg == ["api", "repos", "create"]:
            return self._need("POST") or self._create_repo()
        if seg == ["api", "repos", "delete"]:
            return self._need("DELETE") or self._delete_repo()
        if seg == ["api", "agent-harnesses"]:  # fetched by the client to build its user agent
            return self._send_json(200, {"standardEnvVars": [], "harnesses": {}})
        if seg == ["api", "validate-yaml"]:
            return self._send_json(200, {"errors": [], "warnings": []})
        if len(seg) >= 4 and seg[:2] == ["api", "models"]:
            repo_id, action, rest = f"{seg[2]}/{seg[3]}", (seg[4:5] or [""])[0], seg[5:]
            if action == "" or (action == "revision" and len(rest) == 1):
                return self._need("GET") or self._model_info(repo_id, rest[0] if rest else "main")
            if action == "tree" and rest:
                return self._need("GET") or self._tree(repo_id, rest[0], "/".join(rest[1:]).strip("/"))
            if action == "refs" and not rest:
                return self._need("GET") or self._refs(repo_id)
            if action == "branch" and len(rest) == 1:
                return self._need("POST") or self._create_branch(repo_id, rest[0])
            if action == "preupload" and len(rest) == 1:
                return self._need("POST") or self._preupload(repo_id, rest[0])
            if action == "commit" and len(rest) == 1:
                return self._need("POST") or self._commit(repo_id, rest[0])
        if len(seg) >= 5 and seg[2] == "resolve" and self.command in ("GET", "HEAD"):
            return self._resolve_file(f"{seg[0]}/{seg[1]}", seg[3], "/".join(seg[4:]))
        raise HubError(404, f"Sorry, the fake hub does not implement {self.command} {self.path}")

    # Endpoints
    def _whoami(self) -> None:
        if not self.authed:
            raise HubError(401, "Invalid credentials in Authorization header")
        orgs = [{"type": "org", "name": name, "fullname": name.title(), "roleInOrg": "admin"} for name in ORGS]
        access = {"displayName": "test token", "role": "write"}
        self._send_json(
            200,
            {
                "type": "user",
                "id": "0" * 24,
                "name": USER,
                "fullname": USER.title(),
                "email": f"{USER}@example.com",
                "emailVerified": True,
                "canPay": False,
                "isPro": False,
                "orgs": orgs,
                "auth": {"type": "access_token", "accessToken": access},
            },
        )

    def _create_repo(self) -> None:
        if not self.authed:
            raise HubError(401, "You must be authenticated to create a repo")
        body = self._json_body()
        if body.get("type", "model") != "model":
            raise HubError(400, "The fake hub only hosts model repos")
        namespace, name = body.get("organization") or USER, body.get("name", "")
        if namespace not in (USER, *ORGS):
            raise HubError(403, f'You don\'t have the rights to create a model under the namespace "{namespace}"')
        if not re.fullmatch(r"[\w.-]{1,96}", name):
            raise HubError(400, f"Invalid repo name: {name!r}")
        private = body.get("visibility", "private" if body.get("private") else "public") == "private"
        repo_id = f"{namespace}/{name}"
        self.hub.create_repo(repo_id, private=private)
        self._send_json(200, {"url": f"{self.hub.url}/{repo_id}", "name": repo_id, "id": repo_id})

    def _delete_repo(self) -> None:
        body = self._json_body()
        repo_id = f"{body.get('organization') or USER}/{body.get('name')}"
        self._repo(repo_id, write=True)
        del self.hub.repos[repo_id], self.hub._heads[repo_id]
        self._send_json(200, {})

    def _model_info(self, repo_id: str, revision: str) -> None:
        repo = self._repo(repo_id)
        sha, files = self.hub._resolve(repo_id, revision)
        siblings = [{"rfilename": p, "size": len(d), "blobId": git_sha1(d)} for p, d in sorted(files.items())]
        self._send_json(
            200,
            {
                "_id": repo_id,
                "id": repo_id,
                "modelId": repo_id,
                "author": repo_id.split("/")[0],
                "sha": sha,
                "private": repo["private"],
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "lastModified": _now(),
                "createdAt": _now(),
                "siblings": siblings,
                "usedStorage": sum(len(d) for d in files.values()),
            },
        )

    def _tree(self, repo_id: str, revision: str, folder: str) -> None:
        self._repo(repo_id)
        _, files = self.hub._resolve(repo_id, revision)
        prefix = f"{folder}/" if folder else ""
        recursive = self.query.get("recursive", "false").lower() in ("1", "true")
        entries: dict[str, dict] = {}
        for path in sorted(files):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            folders = range(1, len(parts)) if recursive else range(1, 2 if len(parts) > 1 else 1)
            for depth in folders:
                sub = prefix + "/".join(parts[:depth])
                entries[sub] = {"type": "directory", "oid": hashlib.sha1(sub.encode()).hexdigest(), "path": sub}
            if recursive or len(parts) == 1:
                entries[path] = {"type": "file", "oid": git_sha1(files[path]), "size": len(files[path]), "path": path}
        if folder and not entries:
            raise HubError(404, f"Entry not found: {folder}", "EntryNotFound")
        self._send_json(200, list(entries.values()))

    def _refs(self, repo_id: str) -> None:
        self._repo(repo_id)
        branches = [
            {"name": name, "ref": f"refs/heads/{name}", "targetCommit": sha}
            for name, sha in self.hub._heads[repo_id].items()
        ]
        self._send_json(200, {"branches": branches, "converts": [], "tags": [], "pullRequests": []})

    def _create_branch(self, repo_id: str, branch: str) -> None:
        repo = self._repo(repo_id, write=True)
        if branch in repo["branches"]:
            raise HubError(409, f"Reference refs/heads/{branch} already exists")
        start = self._json_body().get("startingPoint") or "main"
        _, files = self.hub._resolve(repo_id, start)
        self.hub._heads[repo_id][branch] = self.hub._heads[repo_id].get(start, start)
        repo["branches"][branch] = dict(files)
        self._send_json(200, {})

    def _preupload(self, repo_id: str, revision: str) -> None:
        self._repo(repo_id, write=True)
        if self.query.get("create_pr"):
            raise HubError(400, "The fake hub does not support pull requests")
        _, files = self.hub._resolve(repo_id, revision)
        answer = [
            {
                "path": f["path"],
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": git_sha1(files[f["path"]]) if f["path"] in files else None,
            }
            for f in self._json_body().get("files", [])
        ]
        self._send_json(200, {"files": answer, "commitOid": self.hub._heads[repo_id].get(revision)})

    def _commit(self, repo_id: str, revision: str) -> None:
        self._repo(repo_id, write=True)
        if self.query.get("create_pr"):
            raise HubError(400, "The fake hub does not support pull requests")
        if revision not in self.hub._heads[repo_id]:
            raise HubError(404, f"Invalid rev id: {revision} is not a branch", "RevisionNotFound")
        head, files = self.hub._resolve(repo_id, revision)
        files, summary = dict(files), "commit"
        try:
            items = [json.loads(line) for line in self.body.splitlines() if line.strip()]
            for key, value in ((item["key"], item["value"]) for item in items):
                if key == "header":
                    summary, parent = value.get("summary") or summary, value.get("parentCommit")
                    if parent and not head.startswith(parent):
                        raise HubError(412, f"Parent commit {parent} is not the head of {revision} ({head})")
                elif key == "file":
                    content = value["content"]
                    base64_ = value.get("encoding") == "base64"
                    files[value["path"]] = base64.b64decode(content) if base64_ else content.encode()
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
                elif key == "deletedFolder":
                    folder = value["path"].rstrip("/") + "/"
                    files = {p: d for p, d in files.items() if not p.startswith(folder)}
                else:
                    raise HubError(400, f"The fake hub does not support commit operation {key!r} (LFS, copies)")
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise HubError(400, f"Malformed commit payload: {error!r}") from None
        sha = self.hub._record(repo_id, revision, files, summary)
        url = f"{self.hub.url}/{repo_id}/commit/{sha}"
        self._send_json(200, {"success": True, "commitOid": sha, "commitUrl": url, "pullRequestUrl": None})

    def _resolve_file(self, repo_id: str, revision: str, path: str) -> None:
        self._repo(repo_id)
        sha, files = self.hub._resolve(repo_id, revision)
        if path not in files:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": sha})
        data = files[path]
        etag = git_sha1(data)
        headers = {
            "X-Repo-Commit": sha,
            "ETag": f'"{etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Cache-Control": "no-cache",
        }
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if match and data and self.command == "GET":
            start = int(match[1]) if match[1] else max(len(data) - int(match[2] or 0), 0)
            end = min(int(match[2]), len(data) - 1) if match[1] and match[2] else len(data) - 1
            if start > end:
                raise HubError(416, "Range not satisfiable", headers={"Content-Range": f"bytes */{len(data)}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return self._send(206, data[start : end + 1], headers)
        self._send(200, data, headers)


if __name__ == "__main__":
    token = sys.argv[sys.argv.index("--token") + 1] if "--token" in sys.argv else "hf_test_token"
    server = HubServer(token=token)
    print(f"fake hub serving on {server.url} (token {token!r}); Ctrl-C to stop", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.close()
