"""`python -m onnxplain` runs the command line."""

from onnxplain.cli import app

app()
