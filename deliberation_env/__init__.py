"""deliberation-env."""
