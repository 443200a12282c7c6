"""Entry points that run inside a job's process."""
