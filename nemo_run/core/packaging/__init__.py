"""Packagers decide how a task's code reaches where it runs (nothing, a git archive, patterns)."""

from nemo_run.core.packaging.base import Packager

__all__ = ["Packager"]
