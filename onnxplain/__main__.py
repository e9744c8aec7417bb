"""`python -m onnxplain` runs the command line."""
from .cli import app

app()
