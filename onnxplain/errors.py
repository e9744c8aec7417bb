"""User-facing errors. The CLI turns every ``OnnxplainError`` into one line and exit code 2."""


class OnnxplainError(Exception):
    """A problem with the user's input (model, data, options), reported as one line."""


class UnsupportedOpsError(OnnxplainError):
    """Nodes on the explained path that the active rule set has no rule for.

    Raised once, listing every such node, before anything is written.
    """

    def __init__(self, nodes, ruleset: str):
        self.nodes = list(nodes)  # [(op_type, node_name)]
        self.ruleset = ruleset
        listed = ", ".join(f"{op} '{name}'" for op, name in self.nodes)
        super().__init__(
            f"rule set '{ruleset}' has no rule for {len(self.nodes)} node(s) on the explained path: {listed}"
        )


class ShapeError(OnnxplainError):
    """A rule needs a size or rank that is only known at run time.

    The Python API and ``onnxplain explain`` know the input's shape and specialise the graph to it
    (:mod:`onnxplain.graph.specialise`) when they meet this; ``onnxplain export`` asks for
    ``--input-shape``.
    """
