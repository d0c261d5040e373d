"""cicy-search."""
