"""The emulator's patches (infra/moto_server), driven by clients nobody here wrote: boto3 and the AWS CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import boto3
import pytest


def test_message_move_task_semantics(fresh_moto) -> None:
    server = fresh_moto()
    sqs = boto3.client(
        "sqs", region_name="us-east-1", endpoint_url=server.url, aws_access_key_id="x", aws_secret_access_key="x"
    )
    dlq_url = sqs.create_queue(QueueName="dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    src_url = sqs.create_queue(
        QueueName="src",
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1})},
    )["QueueUrl"]
    src_arn = sqs.get_queue_attributes(QueueUrl=src_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    for i in range(5):
        sqs.send_message(
            QueueUrl=src_url,
            MessageBody=f"m{i}",
            MessageAttributes={"n": {"DataType": "String", "StringValue": str(i)}},
        )
    sqs.receive_message(QueueUrl=src_url, MaxNumberOfMessages=10, VisibilityTimeout=0)  # each received once
    assert "Messages" not in sqs.receive_message(QueueUrl=src_url, MaxNumberOfMessages=10)  # … and now in the DLQ
    assert (
        sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"][
            "ApproximateNumberOfMessages"
        ]
        == "5"
    )

    # Only a dead-letter queue can be a source.
    with pytest.raises(sqs.exceptions.ClientError) as refused:
        sqs.start_message_move_task(SourceArn=src_arn)
    assert "Dead Letter Queue" in str(refused.value)

    # Without a destination, the messages go home (through the AWS CLI, as a user would).
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}
    aws = [sys.executable, "-m", "awscli", "sqs", "--endpoint-url", server.url]
    started = subprocess.run(
        [*aws, "start-message-move-task", "--source-arn", dlq_arn], env=env, capture_output=True, text=True, timeout=60
    )
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["TaskHandle"]
    deadline = time.monotonic() + 30
    while True:
        listed = subprocess.run(
            [*aws, "list-message-move-tasks", "--source-arn", dlq_arn],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        (task,) = json.loads(listed.stdout)["Results"]
        if task["Status"] != "RUNNING" or time.monotonic() > deadline:
            break
    assert task["Status"] == "COMPLETED" and task["ApproximateNumberOfMessagesMoved"] == 5, task
    assert task["ApproximateNumberOfMessagesToMove"] == 5 and "TaskHandle" not in task
    got = sqs.receive_message(
        QueueUrl=src_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], AttributeNames=["All"]
    )["Messages"]
    assert sorted(m["Body"] for m in got) == [f"m{i}" for i in range(5)]
    assert all(m["Attributes"]["ApproximateReceiveCount"] == "1" for m in got)  # new messages: a fresh count
    assert {m["MessageAttributes"]["n"]["StringValue"] for m in got} == {str(i) for i in range(5)}

    # A message sent to the DLQ directly has no home: the task fails unless a destination is given.
    sqs.send_message(QueueUrl=dlq_url, MessageBody="orphan")
    sqs.start_message_move_task(SourceArn=dlq_arn)
    deadline = time.monotonic() + 30
    while (task := sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"][0])[
        "Status"
    ] == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert task["Status"] == "FAILED" and "DestinationArn" in task["FailureReason"]
    sqs.start_message_move_task(SourceArn=dlq_arn, DestinationArn=src_arn, MaxNumberOfMessagesPerSecond=50)
    deadline = time.monotonic() + 30
    while (task := sqs.list_message_move_tasks(SourceArn=dlq_arn, MaxResults=10)["Results"][0])[
        "Status"
    ] == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert task["Status"] == "COMPLETED" and task["DestinationArn"] == src_arn
    assert len(sqs.list_message_move_tasks(SourceArn=dlq_arn, MaxResults=10)["Results"]) == 3  # newest first, all kept


def test_incomplete_multipart_uploads_are_aborted_by_the_lifecycle_rule(
    fresh_moto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-day AbortIncompleteMultipartUpload rule acts (a "day" is 2 s here); buckets without one keep theirs."""
    monkeypatch.setenv("PIXFLEET_EMULATOR_DAY_SECONDS", "2")
    server = fresh_moto()
    s3 = boto3.client(
        "s3", region_name="us-east-1", endpoint_url=server.url, aws_access_key_id="x", aws_secret_access_key="x"
    )
    for bucket in ("ruled", "plain"):
        s3.create_bucket(Bucket=bucket)
    rule = {
        "ID": "abort",
        "Status": "Enabled",
        "Filter": {"Prefix": ""},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
    }
    s3.put_bucket_lifecycle_configuration(Bucket="ruled", LifecycleConfiguration={"Rules": [rule]})
    for bucket in ("ruled", "plain"):
        upload = s3.create_multipart_upload(Bucket=bucket, Key="uploads/half/original")
        s3.upload_part(
            Bucket=bucket, Key="uploads/half/original", UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 1024
        )
    assert s3.list_multipart_uploads(Bucket="ruled").get("Uploads")
    deadline = time.monotonic() + 30
    while s3.list_multipart_uploads(Bucket="ruled").get("Uploads") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not s3.list_multipart_uploads(Bucket="ruled").get("Uploads")
    assert len(s3.list_multipart_uploads(Bucket="plain")["Uploads"]) == 1
