"""0.11.1's `nemo_run.core.frontend` package: console helpers (see `console.api`)."""
