"""One TorchX scheduler per backend; `api` holds what they share."""
