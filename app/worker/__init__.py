"""`replicator worker`: drains the SQS queue of S3 events until SIGTERM or SIGINT."""
