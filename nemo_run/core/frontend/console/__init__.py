"""0.11.1's `nemo_run.core.frontend.console` package (see `api`)."""
