"""Not torch: see nemo_run.testing.torchrun_standin."""
