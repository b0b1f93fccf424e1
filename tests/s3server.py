"""A local S3-compatible endpoint for the tests: moto's server, in this process, on 127.0.0.1.

``LocalS3.env()`` is the environment a ``pullwatch scan`` child needs to reach it and nothing
else: fixed credentials, the endpoint in ``AWS_ENDPOINT_URL`` (what botocore reads), no profile
or metadata service to fall back on, and a HOME without an fsspec configuration.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

KEY, SECRET = "AKIAPULLWATCHTEST000", "pullwatch-test-secret"
_USERS = itertools.count()


class LocalS3:
    def __init__(self, home: Path):
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self.home = home
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.client = self._client(KEY, SECRET)

    def stop(self) -> None:
        self._server.stop()

    def env(self, key: str = KEY, secret: str = SECRET) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSSPEC_"))}
        env.update(
            AWS_ACCESS_KEY_ID=key,
            AWS_SECRET_ACCESS_KEY=secret,
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ENDPOINT_URL=self.endpoint,
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            AWS_EC2_METADATA_DISABLED="true",
            HOME=str(self.home),
        )
        return env

    def _client(self, key: str, secret: str) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            region_name="us-east-1",
        )

    def bucket(self, name: str) -> str:
        self.client.create_bucket(Bucket=name)
        return name

    def put(self, bucket: str, key: str, data: bytes) -> str:
        self.client.put_object(Bucket=bucket, Key=key, Body=data)
        return f"s3://{bucket}/{key}"

    @contextlib.contextmanager
    def authenticating(self) -> Iterator[tuple[str, str]]:
        """Turn on moto's checking of credentials (off by default: any key is accepted), for
        an IAM user allowed everything on S3; yields that user's (key, secret)."""
        import boto3

        iam = boto3.client(
            "iam",
            endpoint_url=self.endpoint,
            aws_access_key_id=KEY,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
        )
        user = f"scanner-{os.getpid()}-{next(_USERS)}"  # one user per use: a test may use two
        iam.create_user(UserName=user)
        access = iam.create_access_key(UserName=user)["AccessKey"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
        iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps(policy))
        self._auth("0")
        try:
            yield access["AccessKeyId"], access["SecretAccessKey"]
        finally:
            self._auth("inf")

    def _auth(self, unauthenticated_requests: str) -> None:
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth",
            data=unauthenticated_requests.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10) as rsp:
            assert rsp.status == 200
