"""Native S3 events: recognising what AWS sends about objects, and authenticating SNS.

A domain package: it may import `app.errors`, the standard library, cryptography and
urllib3, and nothing from `app.api`, `app.services` or `app.storage`.
"""
