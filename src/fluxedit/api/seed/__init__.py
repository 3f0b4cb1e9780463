"""The seed platform's API (the primary dialect): predictions, models, files, usage."""
