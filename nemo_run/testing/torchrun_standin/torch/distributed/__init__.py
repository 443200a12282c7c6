"""Not torch.distributed: see nemo_run.testing.torchrun_standin."""
