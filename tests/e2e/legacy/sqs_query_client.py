"""Run with an SDK of the query-protocol era on PYTHONPATH (botocore 1.31): SQS through its older wire, every
answer printed as one JSON document for the test to check. argv: endpoint, access key, secret."""

import base64
import json
import sys
import time

import botocore
import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint, key, secret = sys.argv[1:4]
session = botocore.session.get_session()
assert session.get_service_model("sqs").metadata["protocol"] == "query", botocore.__version__
sqs = session.create_client(
    "sqs",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id=key,
    aws_secret_access_key=secret,
    config=Config(retries={"max_attempts": 1}),
)
out = {"botocore": botocore.__version__}
url = sqs.create_queue(
    QueueName="legacy-q", Attributes={"VisibilityTimeout": "7", "DelaySeconds": "0"}, tags={"team": "old"}
)["QueueUrl"]
out["url"] = url
out["get_url"] = sqs.get_queue_url(QueueName="legacy-q")["QueueUrl"]
out["listed"] = sqs.list_queues(QueueNamePrefix="legacy")["QueueUrls"]
out["attributes"] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout", "QueueArn"])[
    "Attributes"
]
sent = sqs.send_message(
    QueueUrl=url,
    MessageBody="hello <old> & wire",
    MessageAttributes={
        "kind": {"DataType": "String", "StringValue": "greeting"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01bytes"},
    },
)
out["sent"] = {k: sent[k] for k in ("MessageId", "MD5OfMessageBody", "MD5OfMessageAttributes")}
batch = sqs.send_message_batch(
    QueueUrl=url, Entries=[{"Id": "a", "MessageBody": "one"}, {"Id": "b", "MessageBody": "two", "DelaySeconds": 0}]
)
out["batch"] = sorted(e["Id"] for e in batch["Successful"])
got = []
for _ in range(5):
    answer = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"], MessageAttributeNames=["All"], WaitTimeSeconds=1
    )
    got += answer.get("Messages", [])
    if len(got) >= 3:
        break
out["received"] = [
    {
        "Body": m["Body"],
        "MD5OfBody": m["MD5OfBody"],
        "ReceiveCount": m["Attributes"]["ApproximateReceiveCount"],
        "MessageAttributes": {
            k: (v.get("StringValue") or base64.b64encode(v["BinaryValue"]).decode())
            for k, v in (m.get("MessageAttributes") or {}).items()
        },
    }
    for m in got
]
first = got[0]["ReceiptHandle"]
sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=first, VisibilityTimeout=0)
deleted = sqs.delete_message_batch(
    QueueUrl=url, Entries=[{"Id": f"d{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got[1:])]
)
out["deleted"] = len(deleted["Successful"])
sqs.tag_queue(QueueUrl=url, Tags={"extra": "1"})
sqs.untag_queue(QueueUrl=url, TagKeys=["team"])
out["tags"] = sqs.list_queue_tags(QueueUrl=url)["Tags"]
try:
    sqs.get_queue_url(QueueName="no-such-legacy-queue")
except ClientError as exc:
    out["missing"] = [exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]]
forger = session.create_client(
    "sqs",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id=key,
    aws_secret_access_key=secret + "x",
    config=Config(retries={"max_attempts": 1}),
)
try:
    forger.list_queues()
except ClientError as exc:
    out["forged"] = [exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]]
# dead-letter queue redrive: a message dead-lettered, then moved back by a message move task
dlq = sqs.create_queue(QueueName="legacy-dlq")["QueueUrl"]
dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1})
src = sqs.create_queue(QueueName="legacy-src", Attributes={"RedrivePolicy": policy})["QueueUrl"]
sqs.send_message(QueueUrl=src, MessageBody="poison")
for _ in range(100):
    sqs.receive_message(QueueUrl=src, VisibilityTimeout=0)
    if "Messages" in sqs.receive_message(QueueUrl=dlq, VisibilityTimeout=0):
        break
handle = sqs.start_message_move_task(SourceArn=dlq_arn, MaxNumberOfMessagesPerSecond=10)["TaskHandle"]
for _ in range(600):
    tasks = sqs.list_message_move_tasks(SourceArn=dlq_arn, MaxResults=10)["Results"]
    if tasks[0]["Status"] != "RUNNING":
        break
    time.sleep(0.1)
out["moves"] = [{k: v for k, v in t.items() if k != "StartedTimestamp"} for t in tasks]
out["moved_back"] = sqs.receive_message(QueueUrl=src, WaitTimeSeconds=5)["Messages"][0]["Body"]
try:
    sqs.cancel_message_move_task(TaskHandle=handle)
except ClientError as exc:
    out["cancel_done"] = [exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]]
try:
    sqs.list_message_move_tasks(SourceArn=dlq_arn + "-none")
except ClientError as exc:
    out["moves_missing"] = [exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]]
for each in (src, dlq):
    sqs.delete_queue(QueueUrl=each)
# AddPermission's lists travel as AWSAccountId.N and ActionName.N
sqs.add_permission(
    QueueUrl=url, Label="legacy", AWSAccountIds=["111122223333"], Actions=["SendMessage", "ReceiveMessage"]
)
policy = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]["Policy"]
out["permission"] = json.loads(policy)["Statement"]
sqs.remove_permission(QueueUrl=url, Label="legacy")
out["permission_removed"] = "Policy" not in sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
sqs.purge_queue(QueueUrl=url)
sqs.delete_queue(QueueUrl=url)
print(json.dumps(out))
