"""Replicate's HTTP API, so the official `replicate` client works with REPLICATE_BASE_URL set to this server.

A thin face over the same service: it renames inputs, statuses and errors, and nothing more.
"""
