"""Training for lincae models (depends on lincae_cli, never the reverse)."""
