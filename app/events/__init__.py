"""S3 event notifications: recognising what AWS sends about objects and authenticating SNS
(`parse`, `sns`, `sequencer`: pure, no cloud, no web framework), then converging each key on
its source through the engine (`converge`) and taking bodies over HTTP (`intake`).
"""
