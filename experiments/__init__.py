"""Experiments: configs, sweeps, figures, the command line and the dashboard."""
