"""JobConfig: every setting from the environment; defaults, and errors naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from waveflow_job.audio.limits import AudioLimits
from waveflow_job.config import GIB, ConfigError, JobConfig

REQUIRED = {"S3_BUCKET_NAME": "uploads", "WEBHOOK_URL": "https://backend.example.com/webhook/"}


def test_defaults_are_what_a_user_would_expect() -> None:
    config = JobConfig.from_env({**REQUIRED, "TMPDIR": "/scratch"})

    assert config.bucket == "uploads"
    assert config.webhook_url == "https://backend.example.com/webhook"
    assert (config.region, config.endpoint_url, config.webhook_secret) == (None, None, None)
    assert config.upload_prefixes == ()
    assert config.summary_file is None
    assert config.scratch_dir == Path("/scratch")
    assert config.max_file_bytes == 2 * GIB
    assert config.max_duration_seconds == 4 * 3600
    assert config.max_num_peaks == 65536
    assert config.audio_limits == AudioLimits(4000, 768000, 64, 1 << 20, 1 << 27)
    assert config.loudness is True
    assert config.log_level == "INFO"


def test_every_setting_is_read_from_its_variable() -> None:
    config = JobConfig.from_env({
        **REQUIRED, "AWS_REGION": "ap-northeast-2", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:5000", "WEBHOOK_SECRET": "s",
        "UPLOAD_PREFIXES": " audio/ ,uploads/,, ", "LOG_LEVEL": "debug",
        "WAVEFLOW_SUMMARY_FILE": "/dev/termination-log", "WAVEFLOW_MAX_FILE_BYTES": "1000",
        "WAVEFLOW_MAX_DURATION_SECONDS": "0", "WAVEFLOW_MAX_NUM_PEAKS": "4096",
        "WAVEFLOW_WEBHOOK_TIMEOUT_SECONDS": "2.5", "WAVEFLOW_WEBHOOK_BUDGET_SECONDS": "30",
        "WAVEFLOW_S3_MAX_ATTEMPTS": "3", "WAVEFLOW_MIN_SAMPLE_RATE": "8000",
        "WAVEFLOW_MAX_SAMPLE_RATE": "192000", "WAVEFLOW_MAX_CHANNELS": "128",
        "WAVEFLOW_MAX_WAVEFORM_VALUES": "4194304", "WAVEFLOW_MAX_DETAIL_BYTES": "1000000",
        "WAVEFLOW_LOUDNESS": "Off",
    })

    assert config.region == "ap-northeast-2"
    assert config.endpoint_url == "http://127.0.0.1:5000"
    assert config.webhook_secret == "s"
    assert config.upload_prefixes == ("audio/", "uploads/")
    assert config.log_level == "DEBUG"
    assert config.summary_file == Path("/dev/termination-log")
    assert config.max_file_bytes == 1000
    assert config.max_duration_seconds is None  # 0 turns the limit off
    assert config.max_num_peaks == 4096
    assert (config.webhook_timeout, config.webhook_budget) == (2.5, 30.0)
    assert config.s3_max_attempts == 3
    assert config.audio_limits == AudioLimits(8000, 192000, 128, 4194304, 1000000)
    assert config.loudness is False


def test_aws_region_reaches_the_s3_client() -> None:
    from waveflow_job.s3 import Storage

    config = JobConfig.from_env({**REQUIRED, "AWS_REGION": "ap-northeast-2",
                                 "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"})
    storage = Storage(config)
    try:
        assert storage.client.meta.region_name == "ap-northeast-2"
        assert storage.client.meta.config.retries["mode"] == "standard"
        assert storage.client.meta.config.connect_timeout == 5.0
    finally:
        storage.client.close()


@pytest.mark.parametrize(("environ", "message"), [
    ({"WEBHOOK_URL": "http://b/w"}, "S3_BUCKET_NAME is required but not set"),
    ({"S3_BUCKET_NAME": "b", "WEBHOOK_URL": "  "}, "WEBHOOK_URL is required but not set"),
    ({**REQUIRED, "WEBHOOK_URL": "backend/webhook"}, "WEBHOOK_URL must be an http:// or "
                                                     "https:// URL, got 'backend/webhook'"),
    ({**REQUIRED, "WAVEFLOW_MAX_FILE_BYTES": "2G"}, "WAVEFLOW_MAX_FILE_BYTES must be an "
                                                    "integer, got '2G'"),
    ({**REQUIRED, "WAVEFLOW_MAX_NUM_PEAKS": "100000"}, "WAVEFLOW_MAX_NUM_PEAKS must be at "
                                                       "most 65536, got '100000'"),
    ({**REQUIRED, "WAVEFLOW_WEBHOOK_BUDGET_SECONDS": "nan"}, "WAVEFLOW_WEBHOOK_BUDGET_SECONDS "
                                                             "must be finite, got 'nan'"),
    ({**REQUIRED, "WAVEFLOW_S3_MAX_ATTEMPTS": "0"}, "WAVEFLOW_S3_MAX_ATTEMPTS must be at "
                                                    "least 1, got '0'"),
    ({**REQUIRED, "WAVEFLOW_MIN_SAMPLE_RATE": "96000", "WAVEFLOW_MAX_SAMPLE_RATE": "48000"},
     "WAVEFLOW_MIN_SAMPLE_RATE (96000) is above WAVEFLOW_MAX_SAMPLE_RATE (48000)"),
    ({**REQUIRED, "WAVEFLOW_MAX_CHANNELS": "0"}, "WAVEFLOW_MAX_CHANNELS must be at least 1, "
                                                 "got '0'"),
])
def test_bad_settings_are_refused_naming_the_variable(environ: dict[str, str],
                                                      message: str) -> None:
    with pytest.raises(ConfigError) as error:
        JobConfig.from_env(environ)
    assert str(error.value) == message


@pytest.mark.parametrize(("prefixes", "key", "allowed"), [
    ("", "audio/x.wav", True),
    ("", "anything/at/all.mp3", True),
    ("", "waveforms/stem_waveform_0123.json", False),
    ("audio/", "audio/x.wav", True),
    ("audio/", "audiox/x.wav", False),
    ("audio/,uploads/", "uploads/x.wav", True),
    ("waveforms/", "waveforms/x.json", False),
])
def test_deletion_is_allowed_only_under_upload_prefixes_and_never_in_waveforms(
        prefixes: str, key: str, allowed: bool) -> None:
    config = JobConfig.from_env({**REQUIRED, "UPLOAD_PREFIXES": prefixes})
    assert config.may_delete(key) is allowed


@pytest.mark.parametrize(("name", "value"), [("WAVEFLOW_DETAIL_BITS", "12"),
                                             ("WAVEFLOW_DETAIL_SAMPLES_PER_PIXEL", "-1"),
                                             ("WAVEFLOW_DETAIL_SAMPLES_PER_PIXEL", "lots"),
                                             ("WAVEFLOW_MAX_DETAIL_BYTES", "65535"),
                                             ("WAVEFLOW_LOUDNESS", "sometimes")])
def test_detail_waveform_settings_are_checked(name: str, value: str) -> None:
    env = {"S3_BUCKET_NAME": "b", "WEBHOOK_URL": "http://x", name: value}
    with pytest.raises(ConfigError, match=name):
        JobConfig.from_env(env)


def test_detail_waveform_defaults_to_256_frames_per_point_8_bit() -> None:
    config = JobConfig.from_env({"S3_BUCKET_NAME": "b", "WEBHOOK_URL": "http://x"})
    assert (config.detail_samples_per_pixel, config.detail_bits) == (256, 8)
