"""The shared runtime every ChatBox process stands on: workspace, config, env, logs, exits, signals."""

__version__ = "0.1.0"
