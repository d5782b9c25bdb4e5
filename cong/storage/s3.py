"""Reaching an S3-compatible store with boto3: `s3://` URIs, settings from the environment, errors a user can fix.

Where the store is and who we are comes from the environment, never from pipeline parameters (they are stored
in the run's metadata in clear): `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`, `AWS_REGION` or
`AWS_DEFAULT_REGION`, `CONG_S3_ADDRESSING` (`path`, the default with an endpoint, or `virtual`), the retry
variables `AWS_MAX_ATTEMPTS`/`AWS_RETRY_MODE`, and the credentials `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`
(optionally `AWS_SESSION_TOKEN`) either as variables or as files of those names in the folder
`CONG_S3_SECRET_DIR` (a Kubernetes Secret mounted as a volume). Without any, boto3's own chain applies (e.g. a
pod's IAM role). No credential value is ever printed or put in an error.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cong.errors import CongError


@dataclasses.dataclass(frozen=True)
class S3Uri:
    """`s3://bucket/prefix`: a folder of objects (the prefix may be empty: the whole bucket)."""

    bucket: str
    prefix: str

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def as_s3(uri: str) -> str | None:
    """A store URI in the `s3://` form this store's client reads (KFP's `minio://` names a bucket behind the same S3
    API), or None for a URI of no store."""
    for scheme in ("s3://", "minio://"):
        if uri.startswith(scheme):
            return "s3://" + uri.removeprefix(scheme)
    return None


def parse_s3_uri(uri: str) -> S3Uri:
    """`s3://bucket/prefix`, or `minio://bucket/prefix` (how KFP's launcher names a bucket of its default store, which
    speaks the same S3 API)."""
    scheme = next((s for s in ("s3://", "minio://") if uri.startswith(s)), None)
    if scheme is None:
        raise CongError(f"{uri!r} is not an S3 URI; write s3://<bucket>/<prefix>.")
    bucket, _, prefix = uri.removeprefix(scheme).partition("/")
    if not _BUCKET.match(bucket):
        raise CongError(
            f"{uri!r}: {bucket!r} is not a valid bucket name (3-63 characters: lower-case letters, digits, '.', '-')."
        )
    return S3Uri(bucket, prefix.strip("/"))


@dataclasses.dataclass(frozen=True)
class S3Settings:
    """How to reach the store. Credentials are kept out of repr(), logs and error messages."""

    endpoint_url: str | None = None
    region: str = "us-east-1"
    addressing_style: str = "auto"  # boto3's: "path" (needed by most self-hosted stores), "virtual" or "auto"
    access_key_id: str | None = dataclasses.field(default=None, repr=False)
    secret_access_key: str | None = dataclasses.field(default=None, repr=False)
    session_token: str | None = dataclasses.field(default=None, repr=False)
    retry_mode: str = "standard"  # botocore's retry of each request: "standard" or "adaptive"
    max_attempts: int = 5
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Settings:
        env = os.environ if environ is None else environ
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
        addressing = env.get("CONG_S3_ADDRESSING") or ("path" if endpoint else "auto")
        if addressing not in ("path", "virtual", "auto"):
            raise CongError(f"CONG_S3_ADDRESSING={addressing!r}: use path, virtual or auto.")
        retry_mode = env.get("AWS_RETRY_MODE") or "standard"
        if retry_mode not in ("standard", "adaptive", "legacy"):
            raise CongError(f"AWS_RETRY_MODE={retry_mode!r}: use standard, adaptive or legacy.")
        attempts = env.get("AWS_MAX_ATTEMPTS") or "5"
        if not attempts.isdigit() or int(attempts) < 1:
            raise CongError(f"AWS_MAX_ATTEMPTS={attempts!r}: use a whole number of at least 1.")
        key_id, secret, token = _credentials(env)
        return cls(
            endpoint_url=endpoint,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            addressing_style=addressing,
            access_key_id=key_id,
            secret_access_key=secret,
            session_token=token,
            retry_mode=retry_mode,
            max_attempts=int(attempts),
        )

    def replace(self, **changes: Any) -> S3Settings:
        return dataclasses.replace(self, **changes)

    @property
    def endpoint(self) -> str:
        """The endpoint as messages name it."""
        return self.endpoint_url or f"AWS S3 ({self.region})"

    def client(self, max_pool_connections: int = 10):
        """A boto3 S3 client with these settings, made once per settings and pool size: making one takes about a
        third of a second (botocore loads its service model), and a client is safe to share between threads."""
        return _client(self, max_pool_connections)

    def scrub(self, text: str) -> str:
        """`text` with every credential value replaced by ***: the last guard before a message leaves us."""
        for value in (self.access_key_id, self.secret_access_key, self.session_token):
            if value:
                text = text.replace(value, "***")
        return text


@functools.lru_cache(maxsize=16)
def _client(settings: S3Settings, max_pool_connections: int):
    import boto3
    from botocore.config import Config

    # boto3 is imported here: only storage users pay for it.
    session = boto3.session.Session(
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
        aws_session_token=settings.session_token,
        region_name=settings.region,
    )
    config = Config(
        s3={"addressing_style": settings.addressing_style},
        signature_version="s3v4",
        retries={"mode": settings.retry_mode, "max_attempts": settings.max_attempts},
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        max_pool_connections=max_pool_connections,
    )
    return session.client("s3", endpoint_url=settings.endpoint_url, config=config)


_CREDENTIAL_NAMES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def _credentials(env: Mapping[str, str]) -> tuple[str | None, str | None, str | None]:
    """From the files of CONG_S3_SECRET_DIR when it is set (a mounted Secret follows rotation), else variables."""
    folder = env.get("CONG_S3_SECRET_DIR")
    if folder:
        values = []
        for name in _CREDENTIAL_NAMES:
            path = Path(folder) / name
            if path.is_file():
                values.append(path.read_text().strip() or None)
            elif name == "AWS_SESSION_TOKEN":
                values.append(None)
            else:
                raise CongError(
                    f"CONG_S3_SECRET_DIR={folder} has no file {name}. Mount a Secret with the keys AWS_ACCESS_KEY_ID "
                    "and AWS_SECRET_ACCESS_KEY there, or unset CONG_S3_SECRET_DIR and set the variables."
                )
        key_id, secret, token = values
    else:
        key_id, secret, token = (env.get(name) or None for name in _CREDENTIAL_NAMES)
    if bool(key_id) != bool(secret):
        missing = "AWS_SECRET_ACCESS_KEY" if key_id else "AWS_ACCESS_KEY_ID"
        raise CongError(f"{missing} is not set (or empty) while its partner is: set both S3 credentials or neither.")
    return key_id, secret, token


_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "403",
    "Forbidden",
}
_SERVER_BUSY_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "500", "502", "503", "504"}


def error_code(exc: BaseException) -> str | None:
    """The S3 error code of a ClientError (`NoSuchKey`, `403`, ...), None for any other exception."""
    from botocore.exceptions import ClientError

    return str(exc.response.get("Error", {}).get("Code")) if isinstance(exc, ClientError) else None


def transient(exc: BaseException) -> bool:
    """Worth another try of the whole file: the connection broke or the server was busy or restarting."""
    from botocore.exceptions import ChecksumError, ConnectionError, HTTPClientError, IncompleteReadError
    from s3transfer.exceptions import RetriesExceededError

    broken = (ConnectionError, HTTPClientError, IncompleteReadError, ChecksumError, RetriesExceededError)
    return error_code(exc) in _SERVER_BUSY_CODES or isinstance(exc, broken)


def storage_error(exc: BaseException, settings: S3Settings, doing: str, bucket: str | None = None) -> CongError:
    """A CongError that says what failed and how to fix it, for an exception from boto3 while `doing`."""
    from botocore.exceptions import ConnectionError, HTTPClientError, NoCredentialsError
    from s3transfer.exceptions import RetriesExceededError

    if isinstance(exc, RetriesExceededError) and exc.last_exception is not None:
        exc = exc.last_exception
    endpoint = settings.endpoint
    code = error_code(exc)
    if code is not None:
        if code in _CREDENTIAL_CODES:
            message = (
                f"credentials rejected by {endpoint} ({code}) while {doing}: the key is wrong or lacks access to "
                f"bucket {bucket!r}. Set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or CONG_S3_SECRET_DIR) to a key "
                "with access."
            )
        elif code == "NoSuchBucket":
            return _missing_bucket(settings, bucket, doing)
        else:
            detail = exc.response.get("Error", {}).get("Message") or ""
            message = f"S3 error {code} from {endpoint} while {doing}: {detail}".rstrip(": ")
    elif isinstance(exc, NoCredentialsError):
        message = (
            f"no S3 credentials found while {doing}. Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
            "CONG_S3_SECRET_DIR to a folder with those files."
        )
    elif isinstance(exc, ConnectionError | HTTPClientError):
        message = (
            f"cannot reach the S3 endpoint {endpoint} while {doing} ({type(exc).__name__}). Check that it runs "
            "and that AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL) points to it."
        )
    else:
        message = f"{doing} failed at {endpoint}: {type(exc).__name__}: {exc}"
    return CongError(settings.scrub(message))


def _missing_bucket(settings: S3Settings, bucket: str | None, doing: str) -> CongError:
    return CongError(
        f"the bucket {bucket!r} does not exist at {settings.endpoint} ({doing}). Create it or fix the URI."
    )


def check_bucket(client, settings: S3Settings, bucket: str) -> None:
    """Fail early, before any work, when the bucket is missing or the store refuses us."""
    doing = f"checking bucket {bucket!r}"
    try:
        client.head_bucket(Bucket=bucket)
    except Exception as exc:
        # HEAD responses have no body, so a missing bucket is a bare 404.
        if error_code(exc) in ("404", "NoSuchBucket"):
            raise _missing_bucket(settings, bucket, doing) from None
        raise storage_error(exc, settings, doing, bucket) from None


def ensure_bucket(bucket: str, settings: S3Settings | None = None) -> None:
    """Create `bucket` (a name or an s3:// URI) unless it exists."""
    settings = settings or S3Settings.from_env()
    bucket = parse_s3_uri(bucket if bucket.startswith("s3://") else f"s3://{bucket}").bucket
    client = settings.client()
    try:
        client.head_bucket(Bucket=bucket)
        return
    except Exception as exc:
        if error_code(exc) not in ("404", "NoSuchBucket"):
            raise storage_error(exc, settings, f"checking bucket {bucket!r}", bucket) from None
    # Outside us-east-1, S3 wants the region named again.
    where = {} if settings.region == "us-east-1" else {"LocationConstraint": settings.region}
    try:
        client.create_bucket(Bucket=bucket, **({"CreateBucketConfiguration": where} if where else {}))
    except Exception as exc:
        # Someone else (or our own earlier try) made it meanwhile: what we wanted.
        if error_code(exc) != "BucketAlreadyOwnedByYou":
            raise storage_error(exc, settings, f"creating bucket {bucket!r}", bucket) from None
