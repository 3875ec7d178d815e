"""Per-key exclusion and an entry of what was done per key: the protocol (`base`), the
in-process ledger (`local`) and the Redis adapter (`redis`)."""
