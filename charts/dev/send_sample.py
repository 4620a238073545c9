"""Send one sample upload through the kind cluster's emulator (`make kind-send-sample`).

Runs inside the cluster, in a throwaway pod of the operator image (boto3, numpy and soundfile are
there): it writes a two-second tone to the emulated bucket and sends the two messages the backend
would send for it, in the backend's own format: the hash stage, then the analysis. Watch them
with `kubectl -n waveflow get jobs -w` and the webhook sink's log.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time

import boto3
import numpy as np
import soundfile as sf


def tone(seconds: float = 2.0, rate: int = 44100) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def main() -> None:
    bucket, queue_url = os.environ["BUCKET"], os.environ["QUEUE_URL"]
    stem = f"stem-sample-{int(time.time())}"
    key = f"audio/{stem}/sample.wav"
    body = tone()
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=body, ContentType="audio/wav")
    kwargs = {
        "userId": "user-sample",
        "trackId": "track-sample",
        "stemId": stem,
        "filepath": key,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        "original_filename": "sample.wav",
    }
    millis = int(time.time() * 1000)
    sqs = boto3.client("sqs")
    messages = [
        {
            "task": "app.tasks.generate_hash_and_webhook",
            "id": f"hash-{stem}-{millis}",
            "args": [],
            "kwargs": kwargs,
        },
        {
            "task": "app.tasks.process_audio_analysis",
            "id": f"analysis-{stem}-{millis}",
            "args": [],
            "kwargs": {**kwargs, "audio_hash": hashlib.sha256(body).hexdigest()},
        },
    ]
    for message in messages:
        sent = sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(message))
        print(f"sent {message['task']} for s3://{bucket}/{key}: MessageId {sent['MessageId']}")


if __name__ == "__main__":
    main()
