"""Many keys through the engine: sync, check, enqueue and jobs over HTTP."""
