"""A small HTTP client for the Loraworks API: JSON calls, streamed multipart uploads and streamed downloads.

Every failure becomes `ClientError` with the exit code the command line returns for it, so scripts can branch on
`$?` without parsing text (see EXIT_CODES).
"""
from __future__ import annotations

import http.client
import io
import json
import mimetypes
import os
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

EXIT_CODES = {
    "ok": 0, "job_failed": 1, "invalid": 2, "unauthorized": 3, "not_found": 4, "conflict": 5,
    "rate_limited": 6, "too_large": 7, "unreachable": 8,
}
STATUS_EXIT = {400: 2, 401: 3, 404: 4, 409: 5, 413: 7, 429: 6}
CHUNK = 1 << 16


class UploadCut(Exception):
    """The connection closed while an upload was being sent, and no answer could be read."""


class ClientError(Exception):
    def __init__(self, message: str, exit_code: int, status: int | None = None, field: str | None = None):
        super().__init__(message)
        self.message, self.exit_code, self.status, self.field = message, exit_code, status, field


class Client:
    def __init__(self, url: str, token: str | None, timeout: float = 60):
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def get(self, path: str, **query):
        return self._json("GET", path, query=query)

    def post(self, path: str, body: dict | None = None):
        return self._json("POST", path, body=json.dumps(body or {}).encode(),
                          headers={"Content-Type": "application/json"})

    def delete(self, path: str):
        return self._json("DELETE", path)

    def upload(self, path: str, fields: dict[str, str], files: dict[str, Path]):
        """POST a multipart body streamed from disk. A server refusing a too large body may close the connection
        while the body is still on its way: its answer (413) is read all the same, and when there is none the files
        are compared with the upload limit the server announces (GET /api/me)."""
        body = MultipartBody(fields, files)
        try:
            data = self._send_streamed(path, body)
        except UploadCut as cut:
            raise self._over_limit(files) or ClientError(
                f"the connection to {self.url} was cut during the upload ({cut}); try again", EXIT_CODES["unreachable"]
            ) from None
        return json.loads(data) if data else None

    def _send_streamed(self, path: str, body: "MultipartBody") -> bytes:
        url = urllib.parse.urlsplit(f"{self.url}{path}")
        kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        connection = kind(url.hostname, url.port, timeout=self.timeout)
        headers = {"Content-Type": body.content_type, "Content-Length": str(body.length), "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            connection.request("POST", url.path, headers=headers, body=None)
            cut = None
            try:
                for chunk in body:
                    connection.send(chunk)
            except (BrokenPipeError, ConnectionResetError) as error:
                cut = error  # the server stopped reading; it may have answered first
            try:
                response = connection.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as error:
                raise UploadCut(cut or error) from None
            if response.status >= 400:
                raise from_http_error(urllib.error.HTTPError(url.geturl(), response.status, response.reason,
                                                             response.headers, io.BytesIO(data)))
            return data
        except OSError as error:
            raise ClientError(f"cannot reach {self.url}: {error}", EXIT_CODES["unreachable"]) from None
        finally:
            connection.close()

    def _over_limit(self, files: dict[str, Path]) -> "ClientError | None":
        try:
            limit_mb = self.get("/api/me")["limits"]["max_upload_mb"]
        except (ClientError, KeyError, TypeError):
            return None
        for path in files.values():
            size = path.stat().st_size
            if size > limit_mb * 2**20:
                return ClientError(f"{path.name} is {size / 2**20:.1f} MB, over the server's upload limit of "
                                   f"{limit_mb} MB (MAX_UPLOAD_MB); compress it with gzip or split it",
                                   EXIT_CODES["too_large"], 413, "file")
        return None

    def download(self, path: str, target: Path) -> int:
        """Stream a file to `target` (written to a temporary name first, so a failed download leaves nothing)."""
        temp = target.with_name(f".{target.name}.part")
        size = 0
        with self._open("GET", path) as response:
            try:
                with open(temp, "wb") as out:
                    while chunk := self._read(response, path, size):
                        out.write(chunk)
                        size += len(chunk)
                if response.length:  # bytes the server announced and never sent (read(n) does not raise for it)
                    raise ClientError(self._broke_off(path, size, f"{response.length} bytes missing"),
                                      EXIT_CODES["unreachable"])
            except OSError as error:  # writing here: a missing folder, a full disk
                temp.unlink(missing_ok=True)
                raise ClientError(f"cannot write {target}: {error.strerror or error}", EXIT_CODES["invalid"]) from None
            except ClientError:
                temp.unlink(missing_ok=True)
                raise
        os.replace(temp, target)
        return size

    def _read(self, response, path: str, received: int) -> bytes:
        try:
            return response.read(CHUNK)
        except (OSError, http.client.HTTPException) as error:
            raise ClientError(self._broke_off(path, received, f"{type(error).__name__}: {error}"),
                              EXIT_CODES["unreachable"]) from None

    def _broke_off(self, path: str, received: int, why: str) -> str:
        return f"the download of {path} from {self.url} broke off after {received} bytes ({why}); nothing was kept"

    def _json(self, method, path, query=None, body=None, headers=None):
        with self._open(method, path, query, body, headers) as response:
            data = response.read()
        return json.loads(data) if data else None

    def _open(self, method, path, query=None, body=None, headers=None):
        url = f"{self.url}{path}"
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as error:
            raise from_http_error(error) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ClientError(f"cannot reach {self.url}: {reason}", EXIT_CODES["unreachable"]) from None


def from_http_error(error: urllib.error.HTTPError) -> ClientError:
    try:
        detail = json.loads(error.read())["error"]
        message, field = detail["message"], detail.get("field")
    except (ValueError, KeyError, TypeError):
        message, field = f"HTTP {error.code} {error.reason}", None
    if error.code == 429 and error.headers.get("Retry-After"):
        message += f" (Retry-After: {error.headers['Retry-After']} s)"
    return ClientError(message, STATUS_EXIT.get(error.code, EXIT_CODES["unreachable"]), error.code, field)


class MultipartBody:
    """A multipart/form-data body read in chunks: files are streamed from disk, never loaded whole."""

    def __init__(self, fields: dict[str, str], files: dict[str, Path]):
        self.boundary = uuid.uuid4().hex
        self.content_type = f"multipart/form-data; boundary={self.boundary}"
        self.parts: list[bytes | Path] = []
        for name, value in fields.items():
            self.parts.append(self._head(name) + b"\r\n" + str(value).encode() + b"\r\n")
        for name, path in files.items():
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            self.parts.append(self._head(name, path.name) + f"Content-Type: {kind}\r\n\r\n".encode())
            self.parts.append(Path(path))
            self.parts.append(b"\r\n")
        self.parts.append(f"--{self.boundary}--\r\n".encode())
        self.length = sum(p.stat().st_size if isinstance(p, Path) else len(p) for p in self.parts)

    def _head(self, name: str, filename: str | None = None) -> bytes:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename.replace(chr(34), "_")}"'
        return f"--{self.boundary}\r\nContent-Disposition: {disposition}\r\n".encode()

    def __iter__(self):
        for part in self.parts:
            if isinstance(part, Path):
                with open(part, "rb") as source:
                    while chunk := source.read(CHUNK):
                        yield chunk
            else:
                yield part
