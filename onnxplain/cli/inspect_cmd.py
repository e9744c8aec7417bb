"""`onnxplain inspect`: what a model looks like to onnxplain."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from onnxplain.cli.app import app
from onnxplain.cli.common import existing, opt_input, opt_output, opt_prob


@app.command("inspect")
def inspect_cmd(
    model: Path = typer.Argument(..., help="The ONNX model.", show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    input: str | None = opt_input(),
    output: str | None = opt_output(),
    probabilities: bool = opt_prob(),
):
    """Show inputs, outputs, op types with gradient-rule coverage, the explained path and CAM layers."""
    from onnxplain.graph.describe import describe, format_text

    existing(model)
    info = describe(model, input=input, output=output, probabilities=probabilities)
    typer.echo(json.dumps(info, indent=2) if as_json else format_text(info))
