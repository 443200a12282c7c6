"""Backend-neutral building blocks: the store, executors, clients and packagers."""
