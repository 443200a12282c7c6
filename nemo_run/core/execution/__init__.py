"""Executor dataclasses: where a task runs. Configuration and validation only, no I/O at import."""
