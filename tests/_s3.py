"""A local S3-compatible server for tests: moto's ``ThreadedMotoServer`` on 127.0.0.1.

    from tests._s3 import local_s3

    @pytest.fixture
    def s3():
        with local_s3() as server:   # skips the test when moto[server] is not installed
            yield server             # server.uri("run") == "s3://<bucket>/run"

While the block runs, the standard AWS variables point at the server (``AWS_ENDPOINT_URL``, a dummy
key pair, ``AWS_DEFAULT_REGION``; ``AWS_EC2_METADATA_DISABLED`` so no client probes the instance
metadata service), so ``pyarrow.fs.FileSystem.from_uri("s3://...")`` (which reads ``AWS_ENDPOINT_URL``,
with ``http`` taken from its scheme), boto3 and Ray workers started afterwards all reach it. The
environment is restored and the server stopped on exit. Nothing leaves 127.0.0.1.
"""
from __future__ import annotations

import logging
import os
import socket
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

AWS_VARS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE", "AWS_EC2_METADATA_DISABLED")


@dataclass
class LocalS3:
    endpoint: str
    """``http://127.0.0.1:<port>``"""
    bucket: str
    """A bucket created for this server (empty at start)."""
    env: dict
    """The AWS variables set while the block runs (hand them to a subprocess's environment)."""

    def uri(self, *parts: str) -> str:
        """``s3://<bucket>/<parts...>``"""
        return "/".join([f"s3://{self.bucket}", *parts])

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` of the bucket, sorted (boto3, independent of raygen's code)."""
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint)
        out = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", [])]
        return sorted(out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_s3(bucket: str = "") -> Iterator[LocalS3]:
    """Start moto's S3 server on 127.0.0.1 (a free port), create ``bucket`` (default: a random name),
    point the AWS environment at it; restore the environment and stop the server afterwards."""
    import pytest

    pytest.importorskip("moto.server", reason="moto[server] (the test extra) is not installed")
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in AWS_VARS}
    try:
        for k in AWS_VARS:
            os.environ.pop(k, None)
        os.environ.update(env)
        bucket = bucket or f"raygen-test-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        yield LocalS3(endpoint=endpoint, bucket=bucket, env=dict(env))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        try:
            from raygen.storage import clear_cache  # filesystems built for this endpoint must not outlive it

            clear_cache()
        except ImportError:
            pass
        server.stop()
