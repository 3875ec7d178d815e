"""Stand-ins for the clouds' token services, on loopback, answering as the real ones document:

    Metadata        Google's metadata server: ID tokens for an audience, access tokens
    AwsStsGate      in front of moto's STS: AssumeRoleWithWebIdentity only with a token it
                    trusts (one Metadata issued for the audience, or one given), recording the
                    keys STS handed out
    GoogleAuth      Google's STS token exchange (`token_url` of an external_account file): a
                    subject token must be a GetCallerIdentity request SigV4-signed with keys the
                    gate handed out, which it then sends to moto's STS, as Google sends it to
                    AWS's; an OAuth refresh for a user; IAM Credentials' generateAccessToken
    GcsGate         in front of fake-gcs-server: refuses any bearer token not issued here and
                    unexpired, or whose identity may not use the bucket; records who called

Every access token is minted into one `Tokens` registry, with the identity it stands for.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import urllib3

from app.dev import emulators

AWS_VERIFICATION_URL = (
    "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15"
)
AWS_TOKEN_TYPE = "urn:ietf:params:aws:token-type:aws4_request"


@dataclass
class Tokens:
    """Access tokens minted by the stand-ins: token -> (identity, expiry in time.time())."""

    ttl: float = 3.0  # seconds each access token lasts
    issued: dict[str, tuple[str, float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def mint(self, identity: str) -> str:
        token = f"ya29.standin-{secrets.token_hex(12)}"
        with self.lock:
            self.issued[token] = (identity, time.time() + self.ttl)
        return token

    def identity(self, token: str) -> str | None:
        """Who `token` stands for, or None when it was never issued or has expired."""
        with self.lock:
            found = self.issued.get(token)
        if found is None or found[1] <= time.time():
            return None
        return found[0]


class _Server:
    """A ThreadingHTTPServer on a free loopback port, serving `handle` in a thread."""

    def __init__(self) -> None:
        server = self
        self.requests: list[tuple[str, str]] = []
        self.failures: list[Exception] = []  # what handle() raised

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server._dispatch(self)

            do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._http = ThreadingHTTPServer((emulators.HOST, 0), Handler)
        self._http.daemon_threads = True
        self.url = f"http://{emulators.HOST}:{self._http.server_address[1]}"
        self.host = f"{emulators.HOST}:{self._http.server_address[1]}"

    def _dispatch(self, request: BaseHTTPRequestHandler) -> None:
        body = _read_body(request)
        self.requests.append((request.command, request.path))
        try:
            status, headers, content = self.handle(
                request.command, request.path, request.headers, body
            )
        except Exception as exc:  # a stand-in's own failure: say so, as a 500
            self.failures.append(exc)
            status, headers, content = 500, {}, repr(exc).encode()
        request.send_response(status)
        for name, value in headers.items():
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(content)))
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(content)

    def handle(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        raise NotImplementedError

    def __enter__(self) -> _Server:
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self._http.shutdown()
        self._http.server_close()


def _read_body(request: BaseHTTPRequestHandler) -> bytes:
    if request.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(request.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while request.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(request.rfile.read(size))
            request.rfile.readline()
    length = int(request.headers.get("Content-Length") or 0)
    return request.rfile.read(length) if length else b""


def _json(status: int, document: Any, **headers: str) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json", **headers}, json.dumps(document).encode()


# --- Google's metadata server -------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Metadata(_Server):
    """The metadata server of a GKE pod with Workload Identity (or GCE, Cloud Run) running as
    `email`: ID tokens for any audience lasting `id_token_ttl` seconds, access tokens from
    `tokens`."""

    def __init__(self, tokens: Tokens, email: str, id_token_ttl: float = 3.0) -> None:
        super().__init__()
        self.tokens = tokens
        self.email = email
        self.id_token_ttl = id_token_ttl
        self._key = secrets.token_bytes(32)
        self.id_tokens: list[str] = []

    def handle(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        flavor = {"Metadata-Flavor": "Google"}
        if headers.get("Metadata-Flavor") != "Google":
            return 403, flavor, b"Missing required header: Metadata-Flavor"
        url = urllib.parse.urlsplit(path)
        query = dict(urllib.parse.parse_qsl(url.query))
        accounts = "/computeMetadata/v1/instance/service-accounts/"
        if url.path in ("/", "/computeMetadata/v1/"):
            return 200, flavor, b""
        if url.path.startswith(accounts):
            account, _, what = url.path.removeprefix(accounts).partition("/")
            if account not in ("default", self.email):
                return 404, flavor, b"no such service account"
            if what == "identity" and query.get("audience"):
                token = self.id_token(query["audience"])
                return 200, {**flavor, "Content-Type": "text/plain"}, token.encode()
            if what == "token":
                token = self.tokens.mint(f"serviceAccount:{self.email}")
                answer = {"access_token": token, "expires_in": self.tokens.ttl}
                return _json(200, {**answer, "token_type": "Bearer"}, **flavor)
            if what == "" and query.get("recursive") == "true":
                info = {"email": self.email, "aliases": ["default"], "scopes": ["cloud-platform"]}
                return _json(200, info, **flavor)
            if what == "email":
                return 200, flavor, self.email.encode()
        return 404, flavor, b"not found"

    def id_token(self, audience: str) -> str:
        now = int(time.time())
        claims = {
            "iss": "https://accounts.google.com",
            "aud": audience,
            "sub": "104331606784530245555",
            "email": self.email,
            "iat": now,
            "exp": now + self.id_token_ttl,
        }
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = _b64(json.dumps(claims).encode())
        signature = hmac.new(self._key, f"{head}.{payload}".encode(), hashlib.sha256).digest()
        token = f"{head}.{payload}.{_b64(signature)}"
        self.id_tokens.append(token)
        return token

    def claims(self, token: str) -> dict[str, Any] | None:
        """The claims of a token this server signed, None for any other."""
        with contextlib.suppress(ValueError):
            head, payload, signature = token.split(".")
            expected = hmac.new(self._key, f"{head}.{payload}".encode(), hashlib.sha256).digest()
            if hmac.compare_digest(_b64(expected), signature):
                padded = payload + "=" * (-len(payload) % 4)
                claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
                return claims
        return None


# --- AWS STS, in front of moto ------------------------------------------------------------


def _sts_error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    body = (
        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
        f"<Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
        f"<RequestId>{secrets.token_hex(8)}</RequestId></ErrorResponse>"
    )
    return status, {"Content-Type": "text/xml"}, body.encode()


class AwsStsGate(_Server):
    """AWS's STS as moto serves it, except that AssumeRoleWithWebIdentity needs a token this
    gate trusts (`trusted(token, role_arn)` returns None or why not), and the credentials it
    hands out expire after `lifetime` seconds. They are kept in `issued` (access key id ->
    secret, role ARN, expiry in time.time())."""

    def __init__(
        self, moto_url: str, trusted: Callable[[str, str], str | None], lifetime: float
    ) -> None:
        super().__init__()
        self._moto = moto_url
        self._trusted = trusted
        self.lifetime = lifetime
        self._pool = urllib3.PoolManager(retries=False)
        self.issued: dict[str, tuple[str, str, float]] = {}
        self.assumed: list[str] = []  # the role of each AssumeRoleWithWebIdentity that passed
        self.refused: list[str] = []

    def handle(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        form = dict(urllib.parse.parse_qsl(body.decode()))
        form.update(urllib.parse.parse_qsl(urllib.parse.urlsplit(path).query))
        if form.get("Action") == "AssumeRoleWithWebIdentity":
            why = self._trusted(form.get("WebIdentityToken", ""), form.get("RoleArn", ""))
            if why is not None:
                self.refused.append(why)
                return _sts_error(400, "InvalidIdentityToken", why)
        forwarded = {
            k: v for k, v in headers.items() if k.lower() not in ("host", "content-length")
        }
        answer = self._pool.request(method, self._moto + path, body=body, headers=forwarded)
        if form.get("Action") == "AssumeRoleWithWebIdentity" and answer.status == 200:
            text = answer.data.decode()
            key = re.search(r"<AccessKeyId>([^<]+)</AccessKeyId>", text)
            secret = re.search(r"<SecretAccessKey>([^<]+)</SecretAccessKey>", text)
            assert key is not None, text
            assert secret is not None, text
            expiry = time.time() + self.lifetime
            self.issued[key.group(1)] = (secret.group(1), form["RoleArn"], expiry)
            self.assumed.append(form["RoleArn"])
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expiry))
            text = re.sub(
                r"<Expiration>[^<]+</Expiration>", f"<Expiration>{stamp}</Expiration>", text
            )
            return 200, {"Content-Type": "text/xml"}, text.encode()
        return (
            answer.status,
            {"Content-Type": answer.headers.get("Content-Type", "text/xml")},
            answer.data,
        )


# --- Google's STS, IAM Credentials and OAuth ---------------------------------------------


def sigv4_problem(signed: dict[str, Any], secret_for: Callable[[str], str | None]) -> str | None:
    """None when `signed` (a serialized request: url, method, headers) carries a valid AWS
    Signature Version 4 made with a secret `secret_for` knows; else what is wrong."""
    headers = {h["key"].lower(): h["value"] for h in signed.get("headers", [])}
    match = re.fullmatch(
        r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/sts/aws4_request, "
        r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})",
        headers.get("authorization", ""),
    )
    if match is None:
        return "the subject token is not signed with AWS Signature Version 4 for sts"
    key_id, day, region, signed_names, signature = match.groups()
    secret = secret_for(key_id)
    if secret is None:
        return f"the subject token is signed with keys STS never issued, or expired ({key_id})"
    url = urllib.parse.urlsplit(signed["url"])
    query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in sorted(urllib.parse.parse_qsl(url.query))
    )
    names = signed_names.split(";")
    canonical = "\n".join(
        [
            signed["method"],
            url.path or "/",
            query,
            "".join(f"{name}:{headers.get(name, '').strip()}\n" for name in names),
            signed_names,
            hashlib.sha256(b"").hexdigest(),
        ]
    )
    scope = f"{day}/{region}/sts/aws4_request"
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            headers.get("x-amz-date", ""),
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = f"AWS4{secret}".encode()
    for part in (day, region, "sts", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        return "the subject token's signature does not match"
    return None


def _google_error(status: int, error: str, description: str) -> tuple[int, dict[str, str], bytes]:
    return _json(status, {"error": error, "error_description": description})


class GoogleAuth(_Server):
    """Google's STS (`/v1/token`), IAM Credentials (`generateAccessToken`) and the OAuth token
    endpoint for a user's refresh token, all on one port.

    A token exchange from AWS is taken when the subject token is a GetCallerIdentity request
    for `audience`, signed with keys `sts.issued` holds, and moto's STS, sent that request,
    says it comes from a role in `roles`. `may_impersonate(caller, account)` says whether an
    identity may impersonate a service account."""

    def __init__(
        self,
        tokens: Tokens,
        sts: AwsStsGate,
        moto_url: str,
        audience: str,
        roles: set[str],
        may_impersonate: Callable[[str, str], bool] = lambda caller, account: False,
        refresh_tokens: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.tokens = tokens
        self._sts = sts
        self._moto = moto_url
        self.audience = audience
        self.roles = roles
        self.may_impersonate = may_impersonate
        self.refresh_tokens = refresh_tokens or {}  # refresh token -> user identity
        self._pool = urllib3.PoolManager(retries=False)
        self.exchanged: list[str] = []  # the AWS caller ARN of every exchange taken
        self.refused: list[str] = []

    def handle(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if method == "POST" and path == "/v1/token":
            form = dict(urllib.parse.parse_qsl(body.decode()))
            if form.get("grant_type") == "urn:ietf:params:oauth:grant-type:token-exchange":
                return self._exchange(form)
            if form.get("grant_type") == "refresh_token":
                user = self.refresh_tokens.get(form.get("refresh_token", ""))
                if user is None:
                    return _google_error(400, "invalid_grant", "Bad Request")
                token = self.tokens.mint(user)
                return _json(
                    200,
                    {"access_token": token, "expires_in": self.tokens.ttl, "token_type": "Bearer"},
                )
            return _google_error(400, "unsupported_grant_type", form.get("grant_type", ""))
        found = re.fullmatch(r"/v1/projects/-/serviceAccounts/([^/:]+):generateAccessToken", path)
        if method == "POST" and found:
            return self._impersonate(urllib.parse.unquote(found.group(1)), headers)
        return _json(404, {"error": {"code": 404, "message": "not found"}})

    def _exchange(self, form: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        def refuse(why: str) -> tuple[int, dict[str, str], bytes]:
            self.refused.append(why)
            return _google_error(400, "invalid_grant", why)

        if form.get("audience") != self.audience:
            return refuse(f'Invalid value for "audience": {form.get("audience")}')
        if form.get("subject_token_type") != AWS_TOKEN_TYPE:
            return refuse("The subject token type is not supported by this provider")
        try:
            signed = json.loads(urllib.parse.unquote(form.get("subject_token", "")))
        except ValueError:
            return refuse("The subject token is not a serialized AWS request")
        url = urllib.parse.urlsplit(signed.get("url", ""))
        headers = {h["key"].lower(): h["value"] for h in signed.get("headers", [])}
        if (
            not re.fullmatch(r"sts\.[a-z0-9-]+\.amazonaws\.com", url.netloc)
            or signed.get("method") != "POST"
        ):
            return refuse(f"The subject token is not a regional STS request: {signed.get('url')}")
        if dict(urllib.parse.parse_qsl(url.query)).get("Action") != "GetCallerIdentity":
            return refuse("The subject token is not a GetCallerIdentity request")
        if headers.get("x-goog-cloud-target-resource") != self.audience:
            return refuse("The subject token names another target resource")
        problem = sigv4_problem(signed, self._live_secret)
        if problem:
            return refuse(problem)
        # As Google does: send the signed request to STS, which says who signed it.
        sent = {k: v for k, v in headers.items() if k != "host"}
        answer = self._pool.request("POST", f"{self._moto}/?{url.query}", headers=sent, body=b"")
        arn = re.search(r"<Arn>([^<]+)</Arn>", answer.data.decode())
        if answer.status != 200 or arn is None:
            return refuse(f"AWS STS refused the subject token: {answer.status}")
        role = re.sub(
            r"^arn:aws:sts::(\d+):assumed-role/([^/]+)/.*$",
            r"arn:aws:iam::\1:role/\2",
            arn.group(1),
        )
        if role not in self.roles:
            return refuse(f"{arn.group(1)} is not mapped in the workload identity pool")
        self.exchanged.append(arn.group(1))
        token = self.tokens.mint(
            f"principal://{self.audience.removeprefix('//iam.googleapis.com/')}/subject/{arn.group(1)}"
        )
        return _json(
            200,
            {
                "access_token": token,
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": self.tokens.ttl,
            },
        )

    def _live_secret(self, key: str) -> str | None:
        """The secret of keys AWS STS issued and that have not expired."""
        secret, _, expiry = self._sts.issued.get(key, (None, None, 0.0))
        return secret if expiry > time.time() else None

    def _impersonate(self, account: str, headers: Any) -> tuple[int, dict[str, str], bytes]:
        caller = self.tokens.identity(headers.get("Authorization", "").removeprefix("Bearer "))
        if caller is None:
            return _json(
                401,
                {
                    "error": {
                        "code": 401,
                        "message": "Request had invalid authentication credentials.",
                        "status": "UNAUTHENTICATED",
                    }
                },
            )
        if not self.may_impersonate(caller, account):
            message = (
                "Permission 'iam.serviceAccounts.getAccessToken' denied on resource "
                f"(or it may not exist). {caller}"
            )
            self.refused.append(message)
            return _json(
                403, {"error": {"code": 403, "message": message, "status": "PERMISSION_DENIED"}}
            )
        token = self.tokens.mint(f"serviceAccount:{account}")
        expiry = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + self.tokens.ttl))
        return _json(200, {"accessToken": token, "expireTime": expiry})


# --- GCS, in front of fake-gcs-server -----------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    identity: str | None  # None: refused


class GcsGate(_Server):
    """GCS's JSON API as fake-gcs-server serves it, for callers with a live token from
    `tokens` whose identity `allowed` lets through (None: any identity). Records `calls`."""

    def __init__(self, gcs_url: str, tokens: Tokens, allowed: set[str] | None = None) -> None:
        super().__init__()
        self._gcs = gcs_url
        self.tokens = tokens
        self.allowed = allowed
        self._pool = urllib3.PoolManager(retries=False, maxsize=16)
        self.calls: list[Call] = []

    def handle(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        token = headers.get("Authorization", "")
        identity = (
            self.tokens.identity(token.removeprefix("Bearer "))
            if token.startswith("Bearer ")
            else None
        )
        if identity is None:
            self.calls.append(Call(method, path, None))
            error = {
                "code": 401,
                "message": "Invalid Credentials",
                "errors": [
                    {"reason": "authError", "domain": "global", "message": "Invalid Credentials"}
                ],
            }
            return _json(
                401,
                {"error": error},
                **{"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
            )
        if self.allowed is not None and identity not in self.allowed:
            self.calls.append(Call(method, path, None))
            message = (
                f"{identity} does not have storage.buckets.get access to the Google Cloud "
                "Storage bucket."
            )
            return _json(
                403,
                {
                    "error": {
                        "code": 403,
                        "message": message,
                        "errors": [{"reason": "forbidden", "message": message}],
                    }
                },
            )
        self.calls.append(Call(method, path, identity))
        forwarded = {
            k: v
            for k, v in headers.items()
            if k.lower()
            not in ("host", "authorization", "content-length", "transfer-encoding", "connection")
        }
        answer = self._pool.request(
            method,
            self._gcs + path,
            body=body or None,
            headers=forwarded,
            preload_content=True,
            decode_content=False,
        )
        sent = {
            k: v
            for k, v in answer.headers.items()
            if k.lower() not in ("content-length", "transfer-encoding", "connection")
        }
        if "Location" in sent:
            sent["Location"] = sent["Location"].replace(self._gcs, self.url)
        return answer.status, sent, answer.data

    def identities(self) -> set[str | None]:
        return {call.identity for call in self.calls}


@contextlib.contextmanager
def serving(*servers: _Server) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for server in servers:
            stack.enter_context(server)
        yield
