"""`Callback`: hooks that `Tunnel.keep_alive` calls while it holds a tunnel open (0.11.1's
`nemo_run.core.tunnel.client.Callback`, also importable from here)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nemo_run.core.tunnel.client import Tunnel


class Callback:
    """Subclass and override the hooks you need; each default does nothing (setup remembers
    the tunnel as `self.tunnel`)."""

    tunnel: Tunnel

    def setup(self, tunnel: Tunnel) -> None:
        """Called when the tunnel is setup."""
        self.tunnel = tunnel

    def on_start(self) -> None:
        """Called when the keep_alive loop starts."""

    def on_interval(self) -> None:
        """Called at each interval during the keep_alive loop."""

    def on_stop(self) -> None:
        """Called when the keep_alive loop stops."""

    def on_error(self, error: Exception) -> None:
        """Called when an error occurs during the keep_alive loop.

        Args:
            error (Exception): The exception that was raised.
        """
