"""cross-cloud-replicator: stream objects from Amazon S3 into Google Cloud Storage."""
