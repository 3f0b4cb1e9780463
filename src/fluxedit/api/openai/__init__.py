"""OpenAI's image-edit endpoint, so the official `openai` client's images.edit works with base_url set here.

A thin face over the same service: it renames parameters and errors, and nothing more.
"""
