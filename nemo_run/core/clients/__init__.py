"""Thin I/O per backend. Clients know nothing of torchx; schedulers map their answers to states."""
