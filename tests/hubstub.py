"""A stand-in for the Hugging Face Hub, which these machines cannot reach: a local HTTP server that
serves a directory in the Hub's API shape (model info with file metadata, `resolve` downloads with the
X-Repo-Commit / ETag headers and Range resumes, the Hub's X-Error-Code errors). The real
huggingface_hub client talks to it through HF_ENDPOINT; faults are injected per file."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Faults:
    drop_after: dict[str, int] = field(default_factory=dict)  # file -> bytes sent before the first GET is cut
    status_once: dict[str, int] = field(default_factory=dict)  # file -> status of its first GET (429, 503)
    throttle_s: float = 0.0  # sleep per 64 KiB sent (to make downloads overlap)
    huge: bool = False  # advertise an absurd size (disk-space precheck)
    # file -> bytes the listing adds to its true size: every body served is shorter (+) or longer (-)
    # than announced, as from a stale listing or a mirror that rewrote the file
    listed_size_delta: dict[str, int] = field(default_factory=dict)
    # file -> length its first download is cut to, with matching Content-Length headers (HEAD and GET):
    # a well-formed but truncated transfer that only the size check against the listing can catch
    short_body_once: dict[str, int] = field(default_factory=dict)
    # file -> how many of its GETs in a row drop the connection right after the headers (no body byte)
    drop_times: dict[str, int] = field(default_factory=dict)
    retry_after: str | None = None  # the Retry-After header of the status_once answers
    # when set, every GET body waits for the event (at most 120 s) after its headers: a download held
    # mid-file until the test lets it go
    gate: threading.Event | None = None


@dataclass
class Hub:
    root: Path
    repo: str = "test-org/tiny-k2"
    gated_token: str | None = None
    faults: Faults = field(default_factory=Faults)
    log: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # time.monotonic() of each log line
    # Other repositories served by the same server (e.g. a draft model next to its target), by repo id.
    more: dict[str, "Hub"] = field(default_factory=dict)

    def serving(self, path: str) -> "Hub":
        """The repository a request path is for (this one unless it names one of `more`)."""
        for other in self.more.values():
            if path.startswith((f"/api/models/{other.repo}", f"/{other.repo}/resolve/")):
                return other
        return self

    def files(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*") if p.is_file() and not p.name.startswith("."))

    def sibling(self, p: Path) -> dict:
        rel = str(p.relative_to(self.root))
        size = 10**16 if (self.faults.huge and p.suffix == ".safetensors") else p.stat().st_size
        size += self.faults.listed_size_delta.get(rel, 0)
        entry = {"rfilename": rel, "size": size, "blobId": hashlib.sha1(p.read_bytes()).hexdigest()}
        if p.suffix == ".safetensors":  # stored in LFS on the real Hub
            entry["lfs"] = {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "size": size, "pointerSize": 134}
        return entry


def make_handler(root: Hub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def _error(self, status: int, code: str | None = None, msg: str = "", retry_after: str | None = None) -> None:
            body = json.dumps({"error": msg or code or "error"}).encode()
            self.send_response(status)
            if retry_after is not None:
                self.send_header("Retry-After", retry_after)
            if code:
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", msg or code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _authorized(self) -> bool:
            if root.gated_token is None:
                return True
            return self.headers.get("Authorization") == f"Bearer {root.gated_token}"

        def _route(self) -> None:
            path = unquote(urlparse(self.path).path)
            root.log.append(f"{self.command} {path} range={self.headers.get('Range')}")
            root.times.append(time.monotonic())
            hub = root.serving(path)
            api = f"/api/models/{hub.repo}"
            if path.startswith("/api/models/"):
                if not path.startswith(api):
                    return self._error(404, "RepoNotFound", "Repository not found")
                if not self._authorized():
                    return self._error(401, "GatedRepo", "Access to this repo is restricted")
                rev = path[len(api):].removeprefix("/revision/") or "main"
                if rev not in ("main", COMMIT):
                    return self._error(404, "RevisionNotFound", "Invalid rev id")
                info = {"id": hub.repo, "modelId": hub.repo, "sha": COMMIT, "private": False,
                        "gated": bool(hub.gated_token), "siblings": [hub.sibling(p) for p in hub.files()]}
                body = json.dumps(info).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            prefix = f"/{hub.repo}/resolve/"
            if not path.startswith(prefix):
                return self._error(404, "RepoNotFound", "Repository not found")
            if not self._authorized():
                return self._error(401, "GatedRepo", "Access to this repo is restricted")
            rev, _, name = path[len(prefix):].partition("/")
            if rev not in ("main", COMMIT):
                return self._error(404, "RevisionNotFound", "Invalid rev id")
            f = hub.root / name
            if not f.is_file():
                return self._error(404, "EntryNotFound", "Entry not found")
            data = f.read_bytes()
            if name in hub.faults.short_body_once:  # the HEAD before the GET announces the cut size too
                cut_to = hub.faults.short_body_once.pop(name) if self.command == "GET" else hub.faults.short_body_once[name]
                data = data[:cut_to]
            if self.command == "GET" and name in hub.faults.status_once:
                status = hub.faults.status_once.pop(name)
                return self._error(status, None, "rate limited" if status == 429 else "unavailable",
                                   retry_after=hub.faults.retry_after)
            start = 0
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes="):
                start = int(rng[6:].split("-")[0] or 0)
            etag = hashlib.sha256(data).hexdigest() if f.suffix == ".safetensors" else hashlib.sha1(data).hexdigest()
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{etag}"')
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(data) - start))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if self.command == "HEAD":
                return
            body = data[start:]
            if hub.faults.gate is not None:
                hub.faults.gate.wait(timeout=120)
            cut = hub.faults.drop_after.pop(name, None)
            if hub.faults.drop_times.get(name, 0) > 0:
                hub.faults.drop_times[name] -= 1
                cut = 0
            sent = 0
            for i in range(0, len(body), 65536):
                piece = body[i:i + 65536]
                if cut is not None and sent + len(piece) > cut:
                    self.wfile.write(piece[: max(cut - sent, 0)])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)  # the connection drops mid-file
                    return
                self.wfile.write(piece)
                sent += len(piece)
                if hub.faults.throttle_s:
                    time.sleep(hub.faults.throttle_s)

        do_GET = _route
        do_HEAD = _route

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # dropped connections are the point
        pass


class HubServer:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.httpd = _QuietServer(("127.0.0.1", 0), make_handler(hub))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "HubServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
