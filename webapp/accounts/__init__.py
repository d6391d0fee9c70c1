"""A person's own settings: their named API tokens (shown once, stored hashed)."""
