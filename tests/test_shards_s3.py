"""data.root=s3://<bucket>/<prefix>: a prepared folder read from a real local S3-compatible server (moto's,
on a free port) through the per-node cache. The batches equal those of the folder itself; concurrent
workers and processes download each shard once, and a second pass not at all; a damaged cached copy is
downloaded again and an object changed on the server is refused; a missing bucket, index.json, endpoint
or credentials and an unwritable cache are one-line errors; and one real cnnfleet-train run trains
from S3."""

import multiprocessing
import os
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from cnnfleet.cli.prepare import parse, prepare
from cnnfleet.data.shards.storage import open_prepared, shard_locator
from cnnfleet.errors import DataError
from conftest import run_cli
from dataset_files import write_image_folder
from test_shards import batches, data_module, same

try:
    import boto3
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    MOTO_MISSING = ""
except ImportError as exc:  # the dev extra brings moto[server]
    MOTO_MISSING = f"moto[server] is not installed ({exc}); pip install -e '.[dev]'"

BUCKET, PREFIX = "cnnfleet-test", "sets/tiny"
URL = f"s3://{BUCKET}/{PREFIX}"


class _QuietHandler(MotoRequestHandler if not MOTO_MISSING else object):
    def log_request(self, *args: object) -> None:  # no access log on the test's stderr
        pass


class S3Server:
    """moto's S3 server in a thread of this process, on a free port, counting the requests it answers."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()  # (method, path) -> how many
        app = DomainDispatcherApplication(create_backend_app)

        def counting(environ: dict, start_response: object) -> object:
            self.requests[(environ["REQUEST_METHOD"], environ["PATH_INFO"])] += 1
            return app(environ, start_response)

        self.server = make_server("127.0.0.1", 0, counting, threaded=True, request_handler=_QuietHandler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def gets(self, relative: str) -> int:
        return self.requests[("GET", f"/{BUCKET}/{PREFIX}/{relative}")]

    def shard_gets(self) -> int:
        return sum(n for (method, path), n in self.requests.items() if method == "GET" and path.endswith(".tar"))

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # free once closed: nothing listens there


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """The server, with this process's AWS environment pointing at it (dummy credentials, no ~/.aws)."""
    if MOTO_MISSING:
        if os.environ.get("CI") == "true":
            pytest.fail(f"moto is required in CI: {MOTO_MISSING}")
        pytest.skip(MOTO_MISSING)
    s3 = S3Server()
    nowhere = tmp_path_factory.mktemp("aws") / "none"
    env = {
        "AWS_ENDPOINT_URL": s3.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": "2",
        "AWS_CONFIG_FILE": str(nowhere),
        "AWS_SHARED_CREDENTIALS_FILE": str(nowhere),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_NO_SIGN_REQUEST"):
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        s3.env = env
        yield s3
    s3.stop()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("images")
    write_image_folder(src, classes=("ant", "bee", "cat"), per_class=12, size=40, splits=("train", "val"))
    out = tmp_path_factory.mktemp("prepared") / "shards"
    prepare(parse([str(src), str(out), "--shard-size", "10", "--workers", "2", "--quiet"]))
    return out


@pytest.fixture(scope="module")
def uploaded(server: S3Server, prepared: Path) -> Path:
    """The prepared folder in s3://cnnfleet-test/sets/tiny as `aws s3 sync --exclude '.*'` leaves it (index.json
    last)."""
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    files = [
        p for p in sorted(prepared.rglob("*")) if p.is_file() and not p.relative_to(prepared).as_posix().startswith(".")
    ]
    for path in sorted(files, key=lambda p: p.name == "index.json"):
        client.upload_file(str(path), BUCKET, f"{PREFIX}/{path.relative_to(prepared).as_posix()}")
    return prepared


def test_an_s3_root_gives_the_folders_batches_each_shard_downloaded_once_then_never(
    server: S3Server, uploaded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = data_module(uploaded, num_workers=2)
    train, val = batches(local.train_dataloader(), epoch=1), batches(local.val_dataloader())
    cache = tmp_path / "cache"
    server.requests.clear()
    remote = data_module(URL, num_workers=2, cache_dir=str(cache))  # two workers download at once
    assert remote.index.root == str(cache / BUCKET / PREFIX) and remote.num_classes == 3
    assert same(batches(remote.train_dataloader(), epoch=1), train)
    assert same(batches(remote.val_dataloader()), val)
    shards = [s.path for split in ("train", "val") for s in remote.index.splits[split]]
    assert len(shards) == 8 and all(server.gets(path) == 1 for path in shards), server.requests
    assert server.gets("index.json") == 1 and server.shard_gets() == 8
    for path in [*shards, "index.json"]:  # the cache mirrors the object keys
        assert (cache / BUCKET / PREFIX / path).read_bytes() == (uploaded / path).read_bytes()
    assert not list(cache.rglob("*.tmp-*"))

    server.requests.clear()
    again = data_module(URL, num_workers=2, cache_dir=str(cache))  # index.json: fetched at every open
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")  # a worker that tried would fail
    assert same(batches(again.train_dataloader(), epoch=1), train)
    assert same(batches(again.val_dataloader()), val)
    assert server.gets("index.json") == 1 and server.shard_gets() == 0


def _locate_at_once(locate: object, shard: object, barrier: object, paths: object) -> None:
    barrier.wait()
    paths.put(locate(shard))


def test_processes_asking_for_one_shard_at_once_download_it_once(
    server: S3Server, uploaded: Path, tmp_path: Path
) -> None:
    index = open_prepared(URL, str(tmp_path))
    locate, shard = shard_locator(URL, str(tmp_path)), index.splits["train"][0]
    server.requests.clear()
    context = multiprocessing.get_context("fork")
    barrier, paths = context.Barrier(4), context.Queue()
    procs = [context.Process(target=_locate_at_once, args=(locate, shard, barrier, paths)) for _ in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
    assert [proc.exitcode for proc in procs] == [0] * 4
    assert {paths.get(timeout=5) for _ in procs} == {str(tmp_path / BUCKET / PREFIX / shard.path)}
    assert server.gets(shard.path) == 1


def test_a_damaged_cached_shard_is_downloaded_again_and_a_changed_object_is_refused(
    server: S3Server, uploaded: Path, tmp_path: Path
) -> None:
    index, locate = open_prepared(URL, str(tmp_path)), shard_locator(URL, str(tmp_path))
    shard = index.splits["train"][1]
    cached = Path(locate(shard))
    cached.write_bytes(cached.read_bytes()[:5000])  # a copy cut short
    server.requests.clear()
    assert locate(shard) == str(cached) and cached.read_bytes() == (uploaded / shard.path).read_bytes()
    assert server.gets(shard.path) == 1

    original = (uploaded / shard.path).read_bytes()
    changed = bytearray(original)
    changed[600] ^= 0xFF  # same size, other bytes
    client = boto3.client("s3")
    client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{shard.path}", Body=bytes(changed))
    try:
        cold = tmp_path / "cold"
        with pytest.raises(DataError) as caught:
            shard_locator(URL, str(cold))(shard)
    finally:
        client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{shard.path}", Body=original)
    message = str(caught.value)
    assert f"s3://{BUCKET}/{PREFIX}/{shard.path} has SHA-256 " in message and "index.json says" in message
    assert "\n" not in message and "aws s3 sync" in message
    left = cold / BUCKET / PREFIX / shard.path
    assert not left.exists() and not list(left.parent.glob("*.tmp-*"))  # nothing half-checked stays


def test_missing_bucket_index_endpoint_credentials_and_an_unwritable_cache_are_one_line_errors(
    server: S3Server, uploaded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cache = str(tmp_path / "cache")
    elsewhere = f"s3://{BUCKET}/elsewhere"
    cases = [
        ("s3://no-such-bucket/x", f"bucket no-such-bucket does not exist at {server.url}; check data.root="),
        (
            elsewhere,
            f"data.root={elsewhere} has no index.json \\({elsewhere}/index.json not found at "
            f"{server.url}\\); upload a folder prepared by cnnfleet-prepare",
        ),
    ]
    for url, expected in cases:
        with pytest.raises(DataError, match=expected) as caught:
            open_prepared(url, cache)
        assert "\n" not in str(caught.value)
    file = tmp_path / "a-file"
    file.write_text("")
    with pytest.raises(DataError, match=f"data.cache_dir={file} is not writable: .*set data.cache_dir"):
        open_prepared(URL, str(file))

    open_prepared(URL, cache)  # index.json now cached
    dead = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(
        DataError,
        match=f"cannot reach the S3 endpoint {dead} reading s3://{BUCKET}/{PREFIX}/index.json .*AWS_ENDPOINT_URL",
    ) as caught:
        open_prepared(URL, str(tmp_path / "empty-cache"))
    assert "\n" not in str(caught.value)
    with caplog.at_level("WARNING"):
        assert open_prepared(URL, cache).num_classes == 3  # offline: the cached index.json, with a warning
    assert f"cannot reach the S3 endpoint {dead}" in caplog.text and "using the cached index.json" in caplog.text

    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(DataError, match="no AWS credentials to read .*set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        open_prepared(URL, cache)
    monkeypatch.setenv("AWS_NO_SIGN_REQUEST", "true")  # unsigned requests, to a bucket that is not public
    with pytest.raises(DataError, match=f"access denied to s3://{BUCKET}/{PREFIX}/index.json at {server.url} "):
        open_prepared(URL, cache)


def test_cnnfleet_train_trains_from_s3(server: S3Server, uploaded: Path, tmp_path: Path) -> None:
    args = [
        "data=shards",
        f"data.root={URL}",
        "data.image_size=32",
        "data.resize_size=36",
        "data.batch_size=16",
        "model=simple_cnn",
        "trainer.max_epochs=1",
        "logger=csv",
    ]
    result = run_cli("cnnfleet-train", args, tmp_path, env=server.env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.summary()["split_sizes"] == {"train": 36, "val": 36, "test": 36}
    cache = tmp_path / "data" / "shard-cache" / BUCKET / PREFIX  # data.cache_dir's default
    assert (cache / "index.json").is_file() and len(list(cache.glob("train/shard-*.tar"))) == 4


def test_a_download_that_breaks_off_is_tried_again(
    server: S3Server, uploaded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ResponseStreamingError
    from botocore.response import StreamingBody

    index, locate = open_prepared(URL, str(tmp_path)), shard_locator(URL, str(tmp_path))
    shard, read, breaks = index.splits["val"][0], StreamingBody.read, []

    def flaky(self: StreamingBody, amt: int | None = None) -> bytes:
        if not breaks:
            breaks.append(1)
            raise ResponseStreamingError(error="connection reset")
        return read(self, amt)

    monkeypatch.setattr("cnnfleet.data.shards.storage.time.sleep", lambda seconds: None)
    monkeypatch.setattr(StreamingBody, "read", flaky)
    server.requests.clear()
    assert Path(locate(shard)).read_bytes() == (uploaded / shard.path).read_bytes()
    assert breaks == [1] and server.gets(shard.path) == 2
