"""Pure logic: settings from the environment, the job message schema, the error taxonomy."""

from __future__ import annotations

import json

import botocore.exceptions
import pytest

from pipeline.errors import InternalError, InvalidMessage, InvalidSpec, PermanentError, RetryableError, classify
from pipeline.messages import JobMessage, new_job_id, parse_message
from pydantic import ValidationError

from infra.images.compose import ProvisionSettings
from pipeline.settings import SettingsError
from pipeline.transform.spec import Limits, VariantSpec, parse_operations
from services.api.settings import ApiSettings
from services.deadletter.settings import DeadLetterSettings
from services.orchestrator.settings import OrchestratorSettings
from services.worker.settings import WorkerSettings

BASE = {"PIXFLEET_QUEUE_URL": "http://q/1/jobs"}


@pytest.mark.parametrize(
    ("env", "problems"),
    [
        ({}, ["PIXFLEET_QUEUE_URL is required"]),
        ({**BASE, "PIXFLEET_API_PORT": "http"}, ["PIXFLEET_API_PORT='http': not a valid int"]),
        (
            {**BASE, "PIXFLEET_API_PORT": "70000", "PIXFLEET_MAX_BYTES": "0"},
            ["PIXFLEET_API_PORT='70000': must be <= 65535", "PIXFLEET_MAX_BYTES='0': must be >= 1"],
        ),
        ({**BASE, "PIXFLEET_API_PART_SIZE": "1000"}, ["PIXFLEET_API_PART_SIZE='1000': must be >= 5242880"]),
        (
            {**BASE, "PIXFLEET_API_BUFFER_BUDGET": str(6 << 20), "PIXFLEET_API_PART_SIZE": str(8 << 20)},
            ["PIXFLEET_API_BUFFER_BUDGET must be >= PIXFLEET_API_PART_SIZE"],
        ),
        (BASE, []),
    ],
)
def test_api_settings_report_every_problem_at_once(env: dict, problems: list[str]) -> None:
    if not problems:
        settings = ApiSettings.from_env(env)
        assert settings.aws.queue_url == BASE["PIXFLEET_QUEUE_URL"]
        return
    with pytest.raises(SettingsError) as info:
        ApiSettings.from_env(env)
    assert info.value.problems == problems


def test_worker_settings_collect_all_problems() -> None:
    env = {"PIXFLEET_WORKER_CONCURRENCY": "0", "PIXFLEET_WORKER_WAIT_TIME": "99", "PIXFLEET_VISIBILITY_TIMEOUT": "x"}
    with pytest.raises(SettingsError) as info:
        WorkerSettings.from_env(env)
    assert len(info.value.problems) == 4  # queue url + the three above
    ok = WorkerSettings.from_env({**BASE, "PIXFLEET_VISIBILITY_TIMEOUT": "30", "PIXFLEET_WORKER_IDLE_EXIT_AFTER": "5"})
    assert ok.visibility_timeout == 30 and ok.idle_exit_after == 5
    unset = WorkerSettings.from_env(BASE)  # the queue's own values, read when the worker starts
    assert (unset.visibility_timeout, unset.max_receive_count, unset.idle_exit_after) == (None, None, None)


@pytest.mark.parametrize(
    ("settings", "env", "problems"),
    [
        (DeadLetterSettings, BASE, ["PIXFLEET_DLQ_URL is required"]),
        (
            DeadLetterSettings,
            {"PIXFLEET_DEADLETTER_POLL_INTERVAL": "0", "PIXFLEET_MAX_RECEIVE_COUNT": "x"},
            [
                "PIXFLEET_QUEUE_URL is required",
                "PIXFLEET_MAX_RECEIVE_COUNT='x': not a valid int",
                "PIXFLEET_DEADLETTER_POLL_INTERVAL='0': must be >= 0.1",
            ],
        ),
        (DeadLetterSettings, {**BASE, "PIXFLEET_DLQ_URL": "http://q/1/dlq"}, []),
        (
            OrchestratorSettings,
            {
                **BASE,
                "PIXFLEET_RUNTIME": "k8s",
                "PIXFLEET_ORCH_STOP_TASKS_ON_EXIT": "maybe",
                "PIXFLEET_ORCH_TICK": "9e9",
            },
            [
                "PIXFLEET_RUNTIME='k8s': must be 'process' or 'docker'",
                "PIXFLEET_ORCH_STOP_TASKS_ON_EXIT='maybe': not a valid boolean",
                "PIXFLEET_ORCH_TICK='9e9': must be <= 60",
            ],
        ),
        (OrchestratorSettings, {**BASE, "PIXFLEET_RUNTIME": " docker ", "PIXFLEET_API_KEYS": "ignored"}, []),
        (
            ProvisionSettings,
            {"PIXFLEET_EMULATOR": "minio"},
            [
                "AWS_ENDPOINT_URL is required",
                "PIXFLEET_EMULATOR='minio': must be 'localstack' or 'moto'",
            ],
        ),
        (ProvisionSettings, {"AWS_ENDPOINT_URL": "http://aws:4566", "PIXFLEET_VISIBILITY_TIMEOUT": "   "}, []),
    ],
)
def test_every_process_names_each_bad_variable(settings: type, env: dict, problems: list[str]) -> None:
    if not problems:
        settings.from_env(env)
        return
    with pytest.raises(SettingsError) as info:
        settings.from_env(env)
    assert info.value.problems == problems


def test_settings_read_only_what_they_are_given() -> None:
    env = {**BASE, "AWS_DEFAULT_REGION": "eu-west-1", "PIXFLEET_API_KEYS": " a, ,b ", "PIXFLEET_WORKER_ID": " "}
    api = ApiSettings.from_env(env)
    assert (api.aws.region, api.api_keys) == ("eu-west-1", ("a", "b"))  # AWS_REGION unset: the default region
    worker = WorkerSettings.from_env({**env, "PIXFLEET_TASK_ID": "0123456789abcdef"})
    assert worker.worker_id == "worker-01234567"  # a blank variable counts as unset
    by_hand = ApiSettings(aws=api.aws, port=1234)  # built by hand: no environment at all
    assert (by_hand.port, by_hand.api_keys, by_hand.limits) == (1234, (), Limits())
    with pytest.raises(ValidationError):  # frozen
        by_hand.port = 1  # type: ignore[misc]


def _s3_event(key: str, event: str = "ObjectCreated:Post") -> str:
    return json.dumps(
        {
            "Records": [
                {
                    "eventName": event,
                    "eventTime": "2026-01-01T00:00:00.000Z",
                    "s3": {"bucket": {"name": "in"}, "object": {"key": key, "size": 10}},
                }
            ]
        }
    )


JOB_ID = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            JobMessage(job_id=JOB_ID, bucket="in", key="uploads/x/original", preset="web").to_json(),
            [(JOB_ID, "uploads/x/original", "web", "api")],
        ),
        (_s3_event(f"incoming/{JOB_ID}/original"), [(JOB_ID, f"incoming/{JOB_ID}/original", None, "s3-event")]),
        (json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"}), []),
        (_s3_event(f"incoming/{JOB_ID}/original", event="ObjectRemoved:Delete"), []),
    ],
)
def test_parse_message(body: str, expected: list) -> None:
    jobs = parse_message(body)
    assert [(j.job_id, j.key, j.preset, j.origin) for j in jobs] == expected


def test_s3_event_keys_are_url_decoded_and_get_a_stable_id() -> None:
    (a,) = parse_message(_s3_event("incoming/my+holiday%21/photo+1.jpg"))
    (b,) = parse_message(_s3_event("incoming/my+holiday%21/photo+1.jpg"))
    assert a.key == "incoming/my holiday!/photo 1.jpg"
    assert a.job_id == b.job_id and len(a.job_id) == 32


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[]",
        json.dumps({"type": "pixfleet.job", "version": 2}),
        json.dumps({"type": "pixfleet.job", "version": 1, "job_id": "x"}),
        json.dumps({"Records": [{"nope": 1}]}),
        json.dumps({"foo": "bar"}),
    ],
)
def test_invalid_messages_are_permanent(body: str) -> None:
    with pytest.raises(InvalidMessage):
        parse_message(body)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {"type": "pixfleet.job", "version": 1, "job_id": "x", "source": {"bucket": "b", "key": ""}, "preset": 1},
            "job_id must be 32 hex digits; source.bucket and source.key are required (non-empty UTF-8 strings); "
            "preset must be a string",
        ),
        ({"type": "pixfleet.job", "version": 2}, "unsupported job message version 2"),
        (
            {"Records": [{"s3": {"bucket": {"name": ""}, "object": {"key": "k"}}}, 7]},
            "Records[0]: the bucket name is missing or not a non-empty UTF-8 string; "
            "Records[1]: not an S3 event record with s3.bucket.name and s3.object.key",
        ),
        (
            {"Records": [7] * 50},
            "; ".join(
                [f"Records[{i}]: not an S3 event record with s3.bucket.name and s3.object.key" for i in range(20)]
                + ["and 30 more"]
            ),
        ),
    ],
)
def test_message_problems_are_named_together(doc: dict, message: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_message(json.dumps(doc))
    assert info.value.message == message


def test_job_message_round_trip_with_operations() -> None:
    ops = parse_operations([{"name": "a", "width": 10, "format": "png"}])
    msg = JobMessage(job_id=new_job_id(), bucket="b", key="k", operations=ops, size=5, content_type="image/png")
    (back,) = parse_message(msg.to_json())
    assert back == msg


@pytest.mark.parametrize(
    ("raw", "is_error", "fragment"),
    [
        ({"name": "a", "width": 10}, False, None),
        ({"name": "A B"}, True, "name must match"),
        ({"name": "a", "mode": "fill", "width": 10}, True, "needs both width and height"),
        ({"name": "a", "format": "gif"}, True, "format must be one of"),
        ({"name": "a", "quality": 0, "blur": -1}, True, "quality must be"),
        ({"name": "a", "colour": "red"}, True, "unknown field 'colour'"),
        ({"name": "a", "background": "white"}, True, "background must be"),
    ],
)
def test_variant_spec_validation(raw: dict, is_error: bool, fragment: str | None) -> None:
    if not is_error:
        assert VariantSpec.from_dict(raw).name == raw["name"]
        return
    with pytest.raises(InvalidSpec) as info:
        VariantSpec.from_dict(raw)
    assert fragment in info.value.message


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            [{"name": "a", "quality": 0}, {"name": "b", "format": "gif", "x": 1}],
            (
                "operations[0]: quality must be an integer in 1..100; "
                "operations[1]: unknown field 'x'; operations[1]: format must be one of jpeg, png, webp, avif"
            ),
        ),
        ([{"name": "a", "quality": 0}, {"name": "b"}], "quality must be an integer in 1..100"),  # one bad: no index
        ([{"name": "a"}] * 17, "at most 16 variants per job"),
        ({"name": "a"}, "operations must be a non-empty list of variant objects"),
        (["a"], "each operation must be a JSON object"),
        (
            [{"name": "a", "width": "10", "grayscale": 1}],
            "width must be an integer in 1..10000; grayscale must be a boolean",
        ),
        (
            [{"name": "a", **{f"x{i}": 1 for i in range(30)}}],
            "; ".join([f"unknown field 'x{i}'" for i in range(20)] + ["and 10 more"]),
        ),  # hostile input: a bounded message
    ],
)
def test_operation_messages_name_every_bad_field_in_our_words(raw: object, message: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        parse_operations(raw)
    assert info.value.message == message


def test_duplicate_variant_names_are_refused() -> None:
    with pytest.raises(InvalidSpec):
        parse_operations([{"name": "a"}, {"name": "a"}])


@pytest.mark.parametrize(
    ("exc", "kind", "code"),
    [
        (botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"), RetryableError, "aws_unavailable"),
        (
            botocore.exceptions.ClientError(
                {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "PutObject"
            ),
            RetryableError,
            "aws_unavailable",
        ),
        (
            botocore.exceptions.ClientError(
                {"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "PutObject"
            ),
            RetryableError,
            "aws_access_denied",
        ),
        (InvalidSpec("bad"), PermanentError, "invalid_spec"),
        (ValueError("bug"), InternalError, "internal_error"),
        (KeyError("bug"), InternalError, "internal_error"),
        (MemoryError(), RetryableError, "out_of_memory"),
    ],
)
def test_classify(exc: Exception, kind: type, code: str) -> None:
    err = classify(exc)
    assert isinstance(err, kind) and err.code == code
    # A bug is a 500 for the API, and (not being permanent) still retried by the worker.
    assert (err.http_status == 500) == (kind is InternalError)
    assert not isinstance(err, PermanentError) or kind is PermanentError
