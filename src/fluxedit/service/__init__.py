"""The HTTP service: API keys, pricing, safe URL fetching and webhooks."""
