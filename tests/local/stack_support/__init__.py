"""Helpers of the browser and compose tests (tests/local/, tests/docker/test_compose_stack.py)."""
