"""What people run: the command line (``python -m preimage``) and the Jupyter explorer."""
