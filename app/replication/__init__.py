"""The copy engine: one key's flow (look up, decide, copy, verify, settle) and its helpers."""
