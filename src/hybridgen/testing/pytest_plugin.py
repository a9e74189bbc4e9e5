"""pytest fixtures for testing code that uses hybridgen (registered as a pytest plugin)."""
