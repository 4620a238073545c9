"""Send one sample upload through the kind cluster's emulator (`make kind-send-sample`).

Runs inside the cluster, in a throwaway pod of the operator image (boto3 and the job's contract
package are there): it writes a two-second tone to the emulated bucket and sends the two
messages the backend would send for it, built by the contract exactly as the backend writes
them: the hash stage, then the analysis. Watch them with `kubectl -n waveflow get jobs -w` and
the webhook sink's log. The tone is made with the standard library, so the script needs
nothing the operator image does not need itself.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import struct
import time
import wave

import boto3

from waveflow_job.contract import Task, json_envelope, utc_now_iso


def tone(seconds: float = 2.0, rate: int = 44100) -> bytes:
    """A 440 Hz sine at half scale as 16-bit mono WAV bytes."""
    frames = b"".join(struct.pack("<h", round(0.5 * 32767 * math.sin(2 * math.pi * 440 * i / rate)))
                      for i in range(int(seconds * rate)))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)
    return buffer.getvalue()


def main() -> None:
    bucket, queue_url = os.environ["BUCKET"], os.environ["QUEUE_URL"]
    stem = f"stem-sample-{int(time.time())}"
    key = f"audio/{stem}/sample.wav"
    body = tone()
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=body, ContentType="audio/wav")
    kwargs = {"userId": "user-sample", "trackId": "track-sample", "stemId": stem,
              "filepath": key, "timestamp": utc_now_iso(), "original_filename": "sample.wav"}
    sqs = boto3.client("sqs")
    messages = [(Task.HASH, kwargs),
                (Task.ANALYSIS, {**kwargs, "audio_hash": hashlib.sha256(body).hexdigest()})]
    for task, task_kwargs in messages:
        sent = sqs.send_message(QueueUrl=queue_url, MessageBody=json_envelope(task, task_kwargs))
        print(f"sent {task.value} for s3://{bucket}/{key}: MessageId {sent['MessageId']}")


if __name__ == "__main__":
    main()
