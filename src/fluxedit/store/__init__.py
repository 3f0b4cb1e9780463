"""Persistence: predictions, API keys and files in a SQL database, file bytes in a local folder."""
