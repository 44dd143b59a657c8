"""Deploying the Triton model repository: starting and stopping the server (`python -m deploy serve`)."""
