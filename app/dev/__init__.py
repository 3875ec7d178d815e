"""Local emulators and the `make dev` runner. Not used by the service in production."""
