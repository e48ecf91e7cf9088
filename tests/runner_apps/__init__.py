"""Function apps used only by the runner's tests (never deployed, never imported by the real app)."""
