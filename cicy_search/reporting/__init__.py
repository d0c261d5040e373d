"""Reports built from what tracking wrote; they read, never train."""
