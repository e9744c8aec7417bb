"""``python -m onnxplain.cli``."""

from onnxplain.cli import main

main()
