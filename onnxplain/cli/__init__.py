"""The ``onnxplain`` command line.

Every user error (an :class:`~onnxplain.errors.OnnxplainError`, bad usage, onnxruntime
refusing the input) ends in one line ``error: ...`` on stderr and exit code 2; an unexpected
internal failure ends in one line and exit code 1 (``ONNXPLAIN_DEBUG=1`` shows the traceback).
Results go to stdout, progress to stderr (only on a terminal).
"""

from onnxplain.cli import (  # noqa: F401  (they register commands)
    dataset,  # noqa: F401  (explain-dataset; evaluate --ray)
    demo,
    evaluate,
    explain,
    export,
    inspect_cmd,
)
from onnxplain.cli.app import app, merge_numeric_args
from onnxplain.cli.export import _check_and_save

__all__ = ["app", "main", "merge_numeric_args", "_check_and_save"]


def main():  # pragma: no cover - `python -m onnxplain.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
