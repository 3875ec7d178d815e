"""Message queues the worker consumes and the event intake feeds (Amazon SQS)."""
