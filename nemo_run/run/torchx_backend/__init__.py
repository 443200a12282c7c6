"""TorchX integration: task -> AppDef, a Runner that carries Executors, and the schedulers."""
