"""Native S3 events: recognising what AWS sends about objects, and authenticating SNS.

A domain package: it may import `app.errors`, the standard library, cryptography and
urllib3, and nothing from `app.api`, `app.services` or `app.storage`.
"""

# Where SNS signing certificates may come from unless SNS_ENDPOINT_PATTERN says otherwise:
# AWS's own SNS endpoints. Here rather than in app.events.sns so that reading the settings
# does not import cryptography (25 ms of every command's start-up).
SNS_ENDPOINT_PATTERN = r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$"
