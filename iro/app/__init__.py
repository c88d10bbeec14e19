"""The top layer: the `iro` command and the Prefect server commands."""
