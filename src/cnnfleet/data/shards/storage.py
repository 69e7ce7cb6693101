"""Where a prepared folder's files are read from: a local (or shared) folder as it is, or object storage.

data.root=s3://<bucket>/<prefix> is a prepared folder uploaded as it is (`aws s3 sync`). Each node
reads it through a cache, data.cache_dir, that mirrors the object keys:

    <cache_dir>/<bucket>/<prefix>/index.json                    fetched at every open: the source of truth
    <cache_dir>/<bucket>/<prefix>/train/shard-000000.tar        downloaded when a process first needs it
    <cache_dir>/<bucket>/<prefix>/train/.shard-000000.tar.sha256   the digest it was verified against
    <cache_dir>/<bucket>/<prefix>/train/.shard-000000.tar.lock     flock held while it is downloaded

The DataLoader workers of every rank on a node may ask for one shard at once: each takes the shard's
flock, and the first downloads it to a temporary name, checks its size and SHA-256 against index.json
and renames it into place (atomic); the others wait on the lock, then find it there. A cached shard
of the right size, verified against the digest index.json gives now, is used without network (one
with no record of that is hashed locally first). When S3 cannot be reached and a cached index.json
exists, that one is used, with a warning.

boto3 reads the standard AWS environment: credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN; AWS_PROFILE and ~/.aws; instance roles), AWS_DEFAULT_REGION, AWS_MAX_ATTEMPTS /
AWS_RETRY_MODE, and AWS_ENDPOINT_URL or AWS_ENDPOINT_URL_S3 for an S3-compatible server (MinIO, Ceph
RGW, ...; botocore addresses one path-style, http://host/bucket/key, unless ~/.aws/config sets
addressing_style). AWS_NO_SIGN_REQUEST=true reads a public bucket without credentials. Nothing here
imports boto3 (or torch) until an s3:// root is opened.
"""

import fcntl
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cnnfleet.data.prepare_lock import temporary_name
from cnnfleet.data.shards.format import INDEX, Shard, ShardIndex
from cnnfleet.errors import DataError

log = logging.getLogger(__name__)
SCHEME = "s3://"
CHUNK = 1 << 20  # bytes read from a response (and hashed) at a time
DOWNLOAD_TRIES = 3  # a connection that breaks mid-object is tried again (botocore retries only the request)
CREDENTIAL_CODES = (
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AuthorizationHeaderMalformed",
)
DENIED_CODES = ("AccessDenied", "AllAccessDisabled", "Forbidden", "403")
MISSING_CODES = ("NoSuchKey", "NotFound", "404")


def is_object_url(root: str) -> bool:
    return str(root).startswith(SCHEME)


def open_prepared(root: str, cache_dir: str | None) -> ShardIndex:
    """The prepared folder's index (torch-free: the launcher reads the class count from it). For an
    s3:// root, index.json is fetched into the cache and read there (ShardIndex.root: the cache folder)."""
    if not is_object_url(root):
        return ShardIndex.read(root)
    store = S3Shards(root, cache_dir)
    store.fetch_index()
    return ShardIndex.read(store.folder)


def shard_locator(root: str, cache_dir: str | None) -> Callable[[Shard], str]:
    """A function giving each shard's local path (picklable: DataLoader workers call it)."""
    return S3Shards(root, cache_dir) if is_object_url(root) else LocalShards(root)


class LocalShards:
    def __init__(self, root: str) -> None:
        self.root = root

    def __call__(self, shard: Shard) -> str:
        return str(Path(self.root) / shard.path)


def default_cache_dir() -> Path:
    """data.cache_dir=null: <paths.data_dir>/shard-cache, paths.data_dir being <CNNFLEET_ROOT or cwd>/data."""
    return Path(os.environ.get("CNNFLEET_ROOT") or os.getcwd()) / "data" / "shard-cache"


def _line(value: object) -> str:
    """An exception's (or server message's) text on one line, kept short."""
    text = " ".join(str(value or "").split())
    return text if len(text) <= 200 else text[:197] + "..."


class _Unreachable(DataError):
    """The endpoint could not be reached (a cached index.json may stand in)."""


class _BrokenOff(DataError):
    """A download stopped mid-object (it is tried again)."""


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive flock on `path` (created if needed), waiting for the holder; the kernel frees it if
    the holder dies."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the flock


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _client():  # noqa: ANN202 (a botocore client)
    import boto3
    from botocore.config import Config

    options: dict = {"connect_timeout": 10, "read_timeout": 60}
    if os.environ.get("AWS_NO_SIGN_REQUEST", "").strip().lower() in ("1", "true", "yes"):
        from botocore import UNSIGNED

        options["signature_version"] = UNSIGNED
    return boto3.session.Session().client("s3", config=Config(**options))


class S3Shards:
    """A prepared folder in S3 and its cache on this node: fetches index.json; called with a shard,
    returns the cached file's path, downloading and verifying it first if needed. Picklable (each
    process makes its own client)."""

    def __init__(self, url: str, cache_dir: str | None) -> None:
        self.url = url.rstrip("/")
        self.bucket, _, prefix = self.url[len(SCHEME) :].partition("/")
        self.prefix = prefix.strip("/")
        if any(part in ("", ".", "..") for part in self.prefix.split("/")) and self.prefix:
            raise DataError(
                f"data.root={url}: the prefix has an empty, '.' or '..' part; "
                "write it as s3://<bucket>/<folder>/<folder>"
            )
        self.cache_dir = str(Path(cache_dir).expanduser()) if cache_dir else str(default_cache_dir())
        self.folder = Path(self.cache_dir) / self.bucket / self.prefix
        self._client = None
        self._pid: int | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None, "_pid": None}

    @property
    def client(self):  # noqa: ANN201
        if self._client is None or self._pid != os.getpid():  # boto3 clients are not shared across a fork
            self._client, self._pid = _client(), os.getpid()
        return self._client

    @property
    def endpoint(self) -> str:
        return str(self.client.meta.endpoint_url)

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    # ------------------------------------------------------------------ index.json

    def fetch_index(self) -> None:
        """index.json from S3 into the cache (atomically); the cached one, with a warning, when S3 is unreachable."""
        target = self.folder / INDEX
        self.check_writable()
        try:
            data = self._get_bytes(INDEX)
        except _Unreachable as exc:
            if not target.is_file():
                raise
            log.warning("%s; using the cached %s from %s", exc, INDEX, target)
            return
        from cnnfleet.run.files import write_bytes_atomic

        try:
            write_bytes_atomic(target, data)
        except OSError as exc:
            raise self._unwritable(exc) from None

    def check_writable(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            probe = temporary_name(self.folder / ".cnnfleet-write-check")
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise self._unwritable(exc) from None

    def _unwritable(self, exc: OSError) -> DataError:
        reason = exc.strerror or type(exc).__name__
        where = f" ({exc.filename})" if exc.filename else ""
        return DataError(
            f"data.cache_dir={self.cache_dir} is not writable: {reason}{where}; set data.cache_dir to "
            f"a folder this user can write (each node caches the shards of {self.url} there)"
        )

    def _get_bytes(self, relative: str) -> bytes:
        key = self.key(relative)
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except Exception as exc:  # noqa: BLE001 (every botocore failure becomes one line)
            raise self._failure(exc, key) from None

    # ------------------------------------------------------------------ shards

    def __call__(self, shard: Shard) -> str:
        if Path(shard.path).is_absolute() or ".." in Path(shard.path).parts:
            raise DataError(
                f"{self.url}/{INDEX} lists a shard outside the folder ({shard.path}); "
                "prepare the data set again with cnnfleet-prepare"
            )
        path = self.folder / shard.path
        record = path.with_name(f".{path.name}.sha256")
        if self._cached(path, record, shard, rehash=False):
            return str(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with _locked(path.with_name(f".{path.name}.lock")):
                if not self._cached(path, record, shard, rehash=True):  # another process may have just done it
                    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a killed download
                        stale.unlink(missing_ok=True)
                    self._download(shard, path)
        except OSError as exc:
            raise self._unwritable(exc) from None
        return str(path)

    def _cached(self, path: Path, record: Path, shard: Shard, rehash: bool) -> bool:
        """Is `path` this shard: its size, and a record that it was verified against this digest (without
        one, when `rehash`: the file's own digest, which is then recorded)."""
        try:
            if path.stat().st_size != shard.bytes:
                return False
        except FileNotFoundError:
            return False
        try:
            if record.read_text().strip() == shard.sha256:
                return True
        except FileNotFoundError:
            pass
        if rehash and _sha256(path) == shard.sha256:
            record.write_text(shard.sha256)
            return True
        return False

    def _download(self, shard: Shard, path: Path) -> None:
        key = self.key(shard.path)
        for attempt in range(1, DOWNLOAD_TRIES + 1):
            try:
                size = self._fetch_to(shard, key, temporary_name(path), path)
                break
            except _BrokenOff:
                if attempt == DOWNLOAD_TRIES:
                    raise
                log.warning(
                    "downloading s3://%s/%s broke off (try %d of %d); trying again",
                    self.bucket,
                    key,
                    attempt,
                    DOWNLOAD_TRIES,
                )
                time.sleep(attempt)
        log.debug("downloaded s3://%s/%s (%d bytes) to %s", self.bucket, key, size, path)

    def _fetch_to(self, shard: Shard, key: str, tmp: Path, path: Path) -> int:
        """Download `key` to `tmp`, check it against index.json and rename it to `path`."""
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except Exception as exc:  # noqa: BLE001
            raise self._failure(exc, key) from None
        digest, size = hashlib.sha256(), 0
        try:
            with open(tmp, "wb") as out:
                while True:
                    try:
                        chunk = body.read(CHUNK)
                    except Exception as exc:  # noqa: BLE001 (the connection broke mid-object?)
                        failure = self._failure(exc, key)
                        raise (_BrokenOff(str(failure)) if isinstance(failure, _Unreachable) else failure) from None
                    if not chunk:
                        break
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            where = f"s3://{self.bucket}/{key}"
            fix = f"upload the prepared folder again (aws s3 sync <folder> {self.url}) or run cnnfleet-prepare again"
            if size != shard.bytes:
                raise DataError(
                    f"{where} is {size} bytes but index.json says {shard.bytes}: the object was "
                    f"changed after preparation; {fix}"
                )
            if digest.hexdigest() != shard.sha256:
                raise DataError(
                    f"{where} has SHA-256 {digest.hexdigest()[:16]}... but index.json says "
                    f"{shard.sha256[:16]}...: the object was changed after preparation; {fix}"
                )
            record = path.with_name(f".{path.name}.sha256")
            record.unlink(missing_ok=True)  # no moment where the new file stands beside the old record
            os.replace(tmp, path)
            record.write_text(shard.sha256)
        finally:
            body.close()
            tmp.unlink(missing_ok=True)
        return size

    # ------------------------------------------------------------------ errors

    def _failure(self, exc: BaseException, key: str) -> DataError:
        """One line for what S3 (or the way there) said about `key`."""
        from botocore import exceptions as bx

        where, endpoint = f"s3://{self.bucket}/{key}", self.endpoint
        if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError, bx.CredentialRetrievalError)):
            return DataError(
                f"no AWS credentials to read {where} ({_line(exc)}); set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or AWS_NO_SIGN_REQUEST=true for a public "
                "bucket"
            )
        if isinstance(exc, (bx.ConnectionError, bx.HTTPClientError, bx.IncompleteReadError)):
            return _Unreachable(
                f"cannot reach the S3 endpoint {endpoint} reading {where} ({type(exc).__name__}); "
                "check the network, and AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 for an S3-compatible "
                "server"
            )
        if isinstance(exc, bx.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code == "NoSuchBucket":
                return DataError(
                    f"bucket {self.bucket} does not exist at {endpoint}; check data.root={self.url} "
                    "(and AWS_ENDPOINT_URL for an S3-compatible server)"
                )
            if code in MISSING_CODES and key == self.key(INDEX):
                return DataError(
                    f"data.root={self.url} has no {INDEX} ({where} not found at {endpoint}); upload "
                    f"a folder prepared by cnnfleet-prepare there (aws s3 sync <folder> {self.url}) or "
                    "fix data.root"
                )
            if code in MISSING_CODES:
                return DataError(
                    f"{where} is missing but index.json lists it; upload the whole prepared folder "
                    f"again (aws s3 sync <folder> {self.url})"
                )
            if code in DENIED_CODES:
                return DataError(
                    f"access denied to {where} at {endpoint} ({code}); the credentials in use need "
                    "s3:GetObject there (S3 also answers this for a missing object without "
                    "s3:ListBucket)"
                )
            if code in CREDENTIAL_CODES:
                return DataError(
                    f"S3 at {endpoint} rejected the credentials reading {where} ({code}); check "
                    "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN or "
                    "AWS_PROFILE"
                )
            return DataError(f"reading {where} from {endpoint} failed: {code} {_line(error.get('Message'))}")
        return DataError(f"reading {where} from {endpoint} failed ({type(exc).__name__}: {_line(exc)})")
