"""The JSON API under /api/: token auth, the routes that mirror the pages, errors, rate limits and the OpenAPI schema."""
