"""The training loop (``trainer``) and its options (``config``)."""
