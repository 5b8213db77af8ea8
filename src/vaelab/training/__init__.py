"""The one training loop (``trainer``), the hooks it calls by model type (``hooks``), and the code prior fit
(``prior``) that runs through the same loop."""
