"""S3 for the job: HEAD, streaming GET through SHA-256, PUT JSON, tags, DELETE.

The client gets timeouts and its "standard" retry mode (throttling and 5xx are retried with
backoff inside each call). Whatever still fails is translated here, in one place, into the
job's errors: a missing object is final (:class:`ObjectError`, OBJECT_NOT_FOUND); everything
else — connection refused, timeouts, throttling, 5xx, access denied — is
:class:`StorageUnavailable`, so the runner retries and, in the end, dead-letters the message
for a human, instead of telling the backend the stem is broken.
"""

from __future__ import annotations

import base64
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from waveflow_job.config import JobConfig
from waveflow_job.contract import ErrorCode
from waveflow_job.errors import ObjectError, StorageUnavailable, WaveflowError
from waveflow_job.hashing import CHUNK_BYTES, Digest, sha256_chunks

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["MAX_TAGS", "ObjectInfo", "Storage", "decode_tag_value", "encode_tag_value"]

log = logging.getLogger(__name__)

#: S3 allows at most ten tags per object.
MAX_TAGS = 10
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
#: Characters S3 accepts in tag values: Unicode letters and digits, spaces, ``+ - = . _ : / @``.
_TAG_SAFE = re.compile(r"^[\w +\-=.:/@]*$")
_TAG_B64 = "b64:"
_MAX_TAG_VALUE = 256


@dataclass(frozen=True)
class ObjectInfo:
    """What a HEAD told us about an object."""

    key: str
    size: int
    etag: str | None


class Storage:
    """The job's view of its one bucket."""

    def __init__(self, config: JobConfig, client: S3Client | None = None) -> None:
        self.bucket = config.bucket
        self.client: S3Client = client or _client(config)

    # ----------------------------------------------------------------------- reads

    def head(self, key: str, *, max_bytes: int | None = None) -> ObjectInfo:
        """Size and ETag; OBJECT_NOT_FOUND when absent, FILE_TOO_LARGE above ``max_bytes``."""
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _code(error) in _NOT_FOUND:
                self._check_bucket()
            raise self._translate(error, "HEAD", key) from error
        except BotoCoreError as error:
            raise self._translate(error, "HEAD", key) from error
        info = ObjectInfo(key, int(response["ContentLength"]), response.get("ETag"))
        if max_bytes is not None and info.size > max_bytes:
            raise _too_large(key, info.size, max_bytes)
        return info

    def sha256(self, info: ObjectInfo, *, max_bytes: int | None = None) -> Digest:
        """Stream the object through SHA-256; nothing touches the disk."""
        return sha256_chunks(self._chunks(info, max_bytes))

    def download(self, info: ObjectInfo, target: BinaryIO, *,
                 max_bytes: int | None = None) -> Digest:
        """Write the object to ``target`` (a file under $TMPDIR) and hash it in the same pass."""
        return sha256_chunks(self._chunks(info, max_bytes), write=target.write)

    def tags(self, key: str) -> dict[str, str]:
        """The object's tags, values decoded (see :func:`encode_tag_value`)."""
        with self._errors("GET tagging", key):
            response = self.client.get_object_tagging(Bucket=self.bucket, Key=key)
        return {tag["Key"]: decode_tag_value(tag["Value"]) for tag in response["TagSet"]}

    def list_keys(self, prefix: str) -> tuple[list[str], bool]:
        """The keys under ``prefix`` from one ListObjectsV2 page, and whether there are more."""
        with self._errors("LIST", prefix):
            response = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        keys = [item["Key"] for item in response.get("Contents", [])]
        return keys, bool(response.get("IsTruncated"))

    def get_small(self, key: str, *, max_bytes: int = 64 * 1024) -> bytes | None:
        """A small object's bytes (one of the job's own records), or None when it is absent."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _code(error) in _NOT_FOUND:
                return None
            raise self._translate(error, "GET", key) from error
        except BotoCoreError as error:
            raise self._translate(error, "GET", key) from error
        with self._errors("GET", key):
            body = response["Body"]
            try:
                data: bytes = body.read(max_bytes + 1)
            finally:
                body.close()
        if len(data) > max_bytes:
            raise StorageUnavailable(ErrorCode.STORAGE_UNAVAILABLE,
                                     f"s3://{self.bucket}/{key} is larger than a WaveFlow "
                                     f"record can be ({max_bytes} bytes)")
        return data

    # ----------------------------------------------------------------------- writes

    def metadata(self, key: str) -> dict[str, str] | None:
        """The object's user metadata (values decoded), or None when there is no such object."""
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _code(error) in _NOT_FOUND:
                return None
            raise self._translate(error, "HEAD", key) from error
        except BotoCoreError as error:
            raise self._translate(error, "HEAD", key) from error
        return {k: decode_tag_value(v) for k, v in response.get("Metadata", {}).items()}

    def put_json(self, key: str, body: bytes, *, metadata: dict[str, str] | None = None) -> None:
        """Store a JSON document with ``Content-Type: application/json``.

        ``metadata`` values are encoded with :func:`encode_metadata_value` (S3 wants ASCII).
        """
        encoded = {k: encode_metadata_value(v) for k, v in (metadata or {}).items()}
        with self._errors("PUT", key):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body,
                                   ContentType="application/json", Metadata=encoded)

    def put_file(self, key: str, path: str | os.PathLike[str], *,
                 content_type: str = "application/octet-stream") -> None:
        """Store a local file, streamed from disk (a detail waveform may be tens of MB);
        a PUT of the same key replaces it, so a retry converges."""
        with self._errors("PUT", key), open(path, "rb") as body:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body,
                                   ContentType=content_type)

    def merge_tags(self, key: str, tags: dict[str, str]) -> None:
        """Add or replace ``tags``, keeping the object's other tags.

        PutObjectTagging replaces the whole tag set, so the existing tags are read first;
        users' own tags survive. Values are encoded where S3 would refuse them.
        """
        merged = {**self.tags(key), **tags}
        if len(merged) > MAX_TAGS:
            raise StorageUnavailable(
                ErrorCode.STORAGE_UNAVAILABLE,
                f"cannot tag s3://{self.bucket}/{key}: it already has {len(merged) - len(tags)} "
                f"tags and S3 allows {MAX_TAGS} per object")
        tag_set: Any = [{"Key": k, "Value": encode_tag_value(v)} for k, v in merged.items()]
        with self._errors("PUT tagging", key):
            self.client.put_object_tagging(Bucket=self.bucket, Key=key,
                                           Tagging={"TagSet": tag_set})

    def delete(self, key: str) -> None:
        """Delete the object; deleting an absent key succeeds too (S3 semantics)."""
        with self._errors("DELETE", key):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    # ----------------------------------------------------------------------- internals

    def _chunks(self, info: ObjectInfo, max_bytes: int | None) -> Iterator[bytes]:
        """The object's bytes in chunks, pinned to the ETag the HEAD saw."""
        extra: dict[str, Any] = {"IfMatch": info.etag} if info.etag else {}
        with self._errors("GET", info.key):
            response = self.client.get_object(Bucket=self.bucket, Key=info.key, **extra)
            body = response["Body"]
            try:
                seen = 0
                for chunk in body.iter_chunks(CHUNK_BYTES):
                    seen += len(chunk)
                    if max_bytes is not None and seen > max_bytes:
                        raise _too_large(info.key, seen, max_bytes)
                    yield chunk
            finally:
                body.close()

    @contextmanager
    def _errors(self, action: str, key: str) -> Iterator[None]:
        try:
            yield
        except (ClientError, BotoCoreError) as error:
            raise self._translate(error, action, key) from error

    def _check_bucket(self) -> None:
        """A HEAD 404 has no body: make sure it is the key, not the bucket, that is missing."""
        with self._errors("HEAD bucket", ""):
            self.client.head_bucket(Bucket=self.bucket)

    def _translate(self, error: Exception, action: str, key: str) -> WaveflowError:
        where = f"s3://{self.bucket}/{key}"
        if isinstance(error, ClientError):
            code = _code(error)
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _NOT_FOUND and key:
                return ObjectError(ErrorCode.OBJECT_NOT_FOUND, f"{where} does not exist")
            if code in ("PreconditionFailed", "412"):
                return StorageUnavailable(ErrorCode.STORAGE_UNAVAILABLE,
                                          f"{where} changed while it was being read")
            return StorageUnavailable(ErrorCode.STORAGE_UNAVAILABLE,
                                      f"S3 {action} {where} failed: {code} (HTTP {status})")
        return StorageUnavailable(ErrorCode.STORAGE_UNAVAILABLE,
                                  f"S3 {action} {where} failed: {error}")


def encode_tag_value(value: str) -> str:
    """Keep values S3 accepts as they are; base64url others behind a ``b64:`` marker."""
    if _TAG_SAFE.match(value) and not value.startswith(_TAG_B64) \
            and len(value) <= _MAX_TAG_VALUE:
        return value
    encoded = _TAG_B64 + base64.urlsafe_b64encode(value.encode("utf-8")).decode("ascii")
    if len(encoded) > _MAX_TAG_VALUE:
        raise ValueError(f"tag value too long for S3 even encoded ({len(value)} characters)")
    return encoded


def encode_metadata_value(value: str) -> str:
    """S3 user metadata must be printable ASCII; anything else is base64url behind ``b64:``."""
    if value.isascii() and value.isprintable() and not value.startswith(_TAG_B64):
        return value
    return _TAG_B64 + base64.urlsafe_b64encode(value.encode("utf-8")).decode("ascii")


def decode_tag_value(value: str) -> str:
    """Inverse of :func:`encode_tag_value`; foreign values come back unchanged."""
    if value.startswith(_TAG_B64):
        try:
            return base64.urlsafe_b64decode(value[len(_TAG_B64):]).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return value
    return value


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _too_large(key: str, size: int, maximum: int) -> ObjectError:
    return ObjectError(ErrorCode.FILE_TOO_LARGE,
                       f"{key} is {size} bytes; the limit is {maximum} bytes")


def _client(config: JobConfig) -> S3Client:
    """An S3 client with the config's region and endpoint, timeouts and standard retries.

    botocore directly (boto3's clients are botocore's): it skips boto3's resource layer and
    s3transfer, ~40 ms of every job's start-up.
    """
    settings = Config(
        connect_timeout=config.s3_connect_timeout,
        read_timeout=config.s3_read_timeout,
        retries={"mode": "standard", "max_attempts": config.s3_max_attempts},
        # Emulators (moto, MinIO) are addressed by host:port, not by bucket subdomain.
        s3={"addressing_style": "path"} if config.endpoint_url else None,
        user_agent_extra="waveflow-job",
    )
    session = botocore.session.get_session()
    client = session.create_client("s3", region_name=config.region,
                                   endpoint_url=config.endpoint_url, config=settings)
    return cast("S3Client", client)
