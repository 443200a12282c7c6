"""Tunnels: run commands and copy files on the machine that submits Slurm jobs, either this
one (`LocalTunnel`) or a login node over OpenSSH (`SSHTunnel`)."""

from nemo_run.core.tunnel.client import LocalTunnel, SSHTunnel

__all__ = ["SSHTunnel", "LocalTunnel"]
