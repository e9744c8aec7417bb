"""The Python API: ``Explainer(model).explain(x, method=..., target=...)``."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx

from onnxplain.errors import OnnxplainError, ShapeError, user_errors
from onnxplain.graph.canonicalize import canonicalize
from onnxplain.graph.load import load_model
from onnxplain.graph.rewrite import Options, build
from onnxplain.graph.specialise import bind, first_float, promote, side_inputs, specialised
from onnxplain.runtime.result import Explanation
from onnxplain.runtime.session import make_session
from onnxplain.targets import Target
from onnxplain.validate import as_array, check_run_memory, targets_in_range
from onnxplain.validate import class_axis as check_class_axis


def all_methods() -> tuple:
    """Every method name :meth:`Explainer.run` takes, in the method table's order."""
    from onnxplain.methods.catalog import METHODS

    return METHODS.names()


class Explainer:
    """Explains one ONNX model; explanation graphs and sessions are built once per method.

    >>> ex = Explainer("model.onnx")
    >>> heat = ex.explain(x, method="integrated_gradients", target=3)
    """

    def __init__(
        self,
        model,
        *,
        input: str | None = None,
        output: str | None = None,
        probabilities: bool = False,
        class_axis: int | None = None,
        channel_axis: int = 1,
        rules=None,
        providers: list[str] | None = None,
        feeds: dict | None = None,
        input_shape=None,
        device: str = "auto",
        max_memory=None,
    ):
        """``feeds``: values for the model's other inputs (recurrent state, sample rate, masks), constants
        of the explanation. ``input``: a graph input or any inner float tensor; an integer input (token
        ids, bytes) is explained through the first float tensor it produces (its embedding).
        ``input_shape``: specialise the explained input to this shape (the batch axis stays dynamic);
        :meth:`run` does so by itself when a rule needs a size only known at run time.
        ``device``: ``auto`` (CUDA when a session really starts on it), ``cpu`` or ``cuda`` (an error
        when it cannot start); ``providers`` overrides it with onnxruntime provider names.
        ``max_memory``: refuse runs whose activations would need more (bytes, or "8G"; default: half the
        machine's memory)."""
        from onnxplain.runtime.session import providers_for
        from onnxplain.validate import parse_bytes

        self.max_memory = None if max_memory is None else parse_bytes(max_memory, "max_memory")
        with user_errors("cannot load the model"):
            source = load_model(model)
        providers = providers_for(device, providers)
        self.source, self.feeds, self.providers = source, dict(feeds or {}), providers
        self._kw = dict(
            output=output,
            probabilities=probabilities,
            class_axis=class_axis,
            channel_axis=channel_axis,
            rules=rules,
            providers=providers,
            max_memory=max_memory,
        )
        self._graphs: dict = {}
        self._sessions: dict = {}
        self._output_names: dict = {}  # session key -> its output names
        self._checked: set = set()  # (shape, dtype) of inputs that passed check_input's shape and dtype checks
        self._children: dict = {}
        self._no_fold: set = set()  # methods whose K targets cannot share one backward pass here
        self._needs_shape = False  # set when a rule needed a size only known at run time (see run)
        self._needs_fixed_batch = False  # ... and the batch axis had to be fixed too (see _specialised)
        self.entry, self.inner = explained_tensor(source, input)
        self.shape = None if input_shape is None else tuple(None if d is None else int(d) for d in input_shape)
        if self.inner is not None:  # explained through an inner float tensor (an embedding): see run()
            model = promote(bind(source, self.feeds), self.inner)
            input = self.inner
            channel_axis = -1  # [N, T, D] token embeddings: the features are on the last axis
        else:
            # None on an axis keeps it as declared; a given size fixes it, the batch axis too (a sequence-first model)
            model = specialised(bind(source, self.feeds), self.entry, self.shape, keep_batch=False)
        probe = None
        if self.inner is None and self.shape is not None:  # a specialised child: read what inference leaves out
            vi = next(v for v in model.graph.input if v.name == self.entry)
            dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
            # a dynamic batch: probe batches of 1 and 2, so that no tensor is declared with the probe's batch
            probe = [
                {self.entry: np.zeros([d or n for d in self.shape], dtype)}
                for n in ([1, 2] if None in self.shape else [1])
            ]
        with user_errors("cannot load the model"):
            self.canonical = canonicalize(model, probe=probe)
        self.x = self.canonical.input(input if self.inner is not None else self.entry)
        self.options = Options(
            input=self.x.name,
            output=output,
            probabilities=probabilities,
            class_axis=class_axis,
            channel_axis=channel_axis,
            rules=rules,
        )
        out = self.canonical.output(output)
        if class_axis is not None and out.shape is not None:
            check_class_axis(class_axis, len(out.shape), f"output '{out.name}'")
        missing = [
            vi.name
            for vi in side_inputs(model, self.x.name)
            if self.inner is None or vi.name not in {i.name for i in source.graph.input}
        ]
        if missing:
            raise OnnxplainError(
                f"the model's input(s) {', '.join(map(repr, missing))} need values: pass "
                f"feeds={{'{missing[0]}': ...}} (command line: --feed {missing[0]}=FILE.npy or "
                f"--feed {missing[0]}=VALUE)"
            )

    # ---- graphs and sessions --------------------------------------------------------------
    def graph(self, method: str = "gradient", target_mode: str = "class", **params) -> onnx.ModelProto:
        key = (method, target_mode, tuple(sorted(params.items())))
        if key not in self._graphs:
            options = replace(self.options, target_mode=target_mode, **params)
            self._graphs[key] = build(self.canonical.copy(), method, options)  # canonicalised once
        return self._graphs[key]

    def _session(self, method, target_mode, params: dict | None = None):
        params = params or {}
        key = (method, target_mode, tuple(sorted(params.items())))
        if key not in self._sessions:
            self._sessions[key] = make_session(self.graph(method, target_mode, **params), self.providers)
        return self._sessions[key]

    @property
    def fixed_batch(self) -> int | None:
        d = self.x.shape[0] if self.x.shape else None
        return d if isinstance(d, int) and d > 0 else None

    @property
    def logits(self):
        """The explained tensor: the output, or the logits under its final Softmax/LogSoftmax/Sigmoid."""
        from onnxplain.graph.canonicalize import find_logits

        out = self.canonical.output(self.options.output)
        return out if self.options.probabilities else find_logits(self.canonical.graph, out)[0]

    @property
    def num_classes(self) -> int | None:
        from onnxplain.graph.rewrite import class_axis_of

        o = self.options  # may be replaced after construction (the CLI sets channel_axis): cached per option values
        key = (o.output, o.probabilities, o.class_axis)
        cache = self.__dict__.setdefault("_num_classes", {})
        if key not in cache:
            logits = self.logits
            c = None if logits.shape is None else logits.shape[class_axis_of(logits, o)]
            cache[key] = c if isinstance(c, int) else None
        return cache[key]

    # ---- validation -----------------------------------------------------------------------
    @property
    def entry_shape(self):
        """The declared shape of the graph input the user feeds (for an embedding: the token ids)."""
        from onnxplain.graph.specialise import _dims

        return _dims(next(v for v in self.source.graph.input if v.name == self.entry))

    @property
    def entry_integer(self) -> bool:
        vi = next(v for v in self.source.graph.input if v.name == self.entry)
        return vi.type.tensor_type.elem_type not in FLOATS

    def check_input(self, x) -> np.ndarray:
        if self.inner is not None:
            return self.check_entry(x)
        x = as_array(x, f"input '{self.x.name}'")
        if x.dtype.kind == "V" and x.dtype.name == "bfloat16":  # ml_dtypes' bfloat16: bfloat16 models take float32
            x = x.astype(np.float32)
        key = (x.shape, x.dtype)
        if key in self._checked:  # this shape and dtype passed the checks below before: only the values change
            x = x.astype(self.x.dtype, copy=False)
        else:
            x = self._check_shape_dtype(x)
            self._checked.add(key)
        if not np.all(np.isfinite(x)):
            raise OnnxplainError(f"input '{self.x.name}' contains NaN or infinite values")
        return x

    def _check_shape_dtype(self, x: np.ndarray) -> np.ndarray:
        if x.ndim == 0 or len(x) == 0:
            raise OnnxplainError(
                f"input '{self.x.name}' is an empty batch (shape {list(x.shape)}); give at least one item"
            )
        want = self.x.shape
        if not np.issubdtype(x.dtype, np.floating):
            raise OnnxplainError(f"input '{self.x.name}' must be a float array, got {x.dtype}")
        try:
            x = x.astype(self.x.dtype, copy=False)
        except TypeError:
            kind = onnx.helper.tensor_dtype_to_string(self.x.dtype) if isinstance(self.x.dtype, int) else self.x.dtype
            raise OnnxplainError(
                f"input '{self.x.name}' has an element type numpy cannot hold ({kind}); onnxplain cannot feed it"
            ) from None
        if want is not None:
            if x.ndim != len(want):
                raise OnnxplainError(f"input '{self.x.name}' expects shape {_fmt(want)}, got {list(x.shape)}")
            for i, (d, n) in enumerate(zip(want, x.shape)):
                if isinstance(d, int) and d > 0 and d != n and not (i == 0 and d == 1):
                    raise OnnxplainError(f"input '{self.x.name}' expects shape {_fmt(want)}, got {list(x.shape)}")
        return x

    def check_target(self, target, n: int) -> np.ndarray:
        if target is None:  # the arg-max of every item: nothing to check
            return np.full(n, -1, dtype=np.int64)
        t = as_array(target, "target")
        if not np.issubdtype(t.dtype, np.integer):
            raise OnnxplainError(f"target must be integer class indices, got {t.dtype}")
        t = np.broadcast_to(t.astype(np.int64), (n,)) if t.ndim == 0 or t.size == 1 else t.astype(np.int64)
        if t.shape != (n,):
            raise OnnxplainError(f"target must give one class per batch item ({n}), got shape {list(t.shape)}")
        c = self.num_classes
        if c is not None and (np.any(t >= c) or np.any(t < -1)):
            raise OnnxplainError(f"target {t.tolist()} out of range: the model has {c} classes (use -1 for argmax)")
        return np.ascontiguousarray(t)

    def check_baseline(self, baseline, x: np.ndarray) -> np.ndarray:
        """The baseline broadcast to ``x``'s shape, in its dtype; a one-line error when it cannot be."""
        try:
            b = np.asarray(baseline, x.dtype)
            if not np.all(np.isfinite(b)):
                raise OnnxplainError("the baseline contains NaN or infinite values")
            return np.ascontiguousarray(np.broadcast_to(b, x.shape))
        except (TypeError, ValueError):
            raise OnnxplainError(
                f"the baseline (shape {list(np.shape(baseline))}) does not broadcast to the "
                f"input's shape {list(x.shape)}"
            ) from None

    def check_weights(self, weights, x: np.ndarray) -> np.ndarray:
        w = as_array(weights, "target_weights")
        out = self.canonical.output(self.options.output)
        want = out.shape
        if want is not None:
            static = lambda d: isinstance(d, int) and d > 0  # noqa: E731
            batch = not static(want[0]) or want[0] == self.fixed_batch  # axis 0 is the batch (or time-major)
            dims = [len(x) if batch else want[0], *want[1:]]
            if w.ndim != len(want) or any(static(d) and d != n for d, n in zip(dims, w.shape)):
                cls = ShapeError if self.shape is None and not all(map(static, want)) else OnnxplainError
                raise cls(
                    f"target_weights must have the explained output's shape {_fmt(dims)} ('{out.name}'), "
                    f"got {list(w.shape)}"
                )
        if not (np.issubdtype(w.dtype, np.floating) or np.issubdtype(w.dtype, np.integer)):
            raise OnnxplainError(f"target_weights must be a float array, got {w.dtype}")
        if not np.all(np.isfinite(w)):
            raise OnnxplainError("target_weights contain NaN or infinite values")
        return np.ascontiguousarray(w.astype(x.dtype))

    def target(self, x: np.ndarray, target=None, target_weights=None) -> Target:
        """What to explain for the batch ``x``: one class per item (default: the arg-max), a weight tensor
        or a target object of :mod:`onnxplain.targets` (``Detection``, ``Region``, ``Sequence``, ...)."""
        from onnxplain.targets import Spec, resolve

        if self.inner is not None:  # explained per item through the embedding (_run_inner): resolved there
            if isinstance(target, Spec):
                return Target(None, None, True, spec=target)
            if isinstance(target, Target):
                return target
            if target_weights is not None:
                return Target(None, np.asarray(target_weights), True)
            return Target(self.check_target(target, len(x)), None, target is not None)
        t = resolve(self, x, target, target_weights)
        if t is not None:
            return t
        if target_weights is not None:
            if target is not None:
                raise OnnxplainError("give either target or target_weights, not both")
            return Target(None, self.check_weights(target_weights, x), True)
        return Target(self.check_target(target, len(x)), None, target is not None)

    # ---- running --------------------------------------------------------------------------
    def graph_feeds(self, x: np.ndarray, target: Target) -> dict:
        """The explanation graph's inputs for ``x`` and ``target``."""
        if target.weights is not None:
            return {self.x.name: x, "target_weights": target.weights}
        return {self.x.name: x, "target": target.classes}

    def run_graph(
        self, method: str, mode: str, feeds: dict, params: dict | None = None, batch_size: int = 16
    ) -> Explanation:
        """Run ``method``'s explanation graph (built with ``params``) over the batch axis in chunks."""
        params = params or {}
        if "baseline" in feeds and "baseline" not in {i.name for i in self.graph(method, mode, **params).graph.input}:
            feeds = {k: v for k, v in feeds.items() if k != "baseline"}
        sess = self._session(method, mode, params)
        names = self._output_names.get(id(sess))
        if names is None:
            names = self._output_names[id(sess)] = [o.name for o in sess.get_outputs()]
        n = len(feeds[self.x.name])
        step = self.fixed_batch or max(1, batch_size)
        if n <= step and (not self.fixed_batch or n == self.fixed_batch):  # one call; feeds need no batch axis
            # in front (time-major outputs)
            res = dict(zip(names, sess.run(names, feeds)))
            outputs = {k: v for k, v in res.items() if k not in ("attribution", "target_index")}
            return Explanation(attribution=res["attribution"], target=res.get("target_index"), outputs=outputs)
        parts = []
        for i in range(0, n, step):
            chunk = {k: v[i : i + step] for k, v in feeds.items()}
            k = len(chunk[self.x.name])
            if self.fixed_batch and k < step:  # a fixed batch: pad with copies of the last row, drop them after
                chunk = {key: np.concatenate([v, np.repeat(v[-1:], step - k, 0)]) for key, v in chunk.items()}
            parts.append([r[:k] for r in sess.run(names, chunk)])
        res = {name: np.concatenate([p[j] for p in parts]) for j, name in enumerate(names)}
        outputs = {k: v for k, v in res.items() if k not in ("attribution", "target_index")}
        return Explanation(attribution=res["attribution"], target=res.get("target_index"), outputs=outputs)

    def run(
        self, x, method: str = "gradient", target=None, target_weights=None, *, progress=None, **options
    ) -> Explanation:
        """Explain ``x`` ([N, ...]) with ``method``; returns attribution, explained targets and the outputs.

        ``method`` is any name or alias of the method table (:data:`onnxplain.methods.catalog.METHODS`;
        the README lists them with their options). ``target``: a class per item (``-1``: the arg-max);
        ``target_weights``: a weight tensor of the explained output's shape (the explained scalar is
        ``sum(w * output)``). ``options`` are the method's own (``steps=``, ``layer=``, ``window=``, ...)
        and ``batch_size``; an option the method does not take is an error, never ignored.
        ``progress(done, total)`` is called as long methods advance.
        """
        from onnxplain.methods.catalog import method as lookup

        m = lookup(method)
        opts = m.settings(options)
        if target_weights is None and np.ndim(target) == 2 and not isinstance(target, Target):
            return self._run_many(x, m, target, opts, progress, options)
        if self.inner is not None:
            return self._run_inner(x, m, target, target_weights, opts, progress)
        x = self.check_input(x)
        if self._needs_shape:  # an earlier run met a size only known at run time: go to the specialised child
            return self._specialised(x, m.name, target, target_weights, progress, options)
        try:
            t = self.target(x, target, target_weights)  # declared output shapes can be wrong: ShapeError
            runner = t.explainer or self  # t.explainer: the tensor a detection seeds (e.g. the scores before NMS)
            check_run_memory(runner, x, opts.get("batch_size"), self.max_memory)
            with user_errors(f"{m.name} failed"):
                res = m.run(runner, x, t, opts, progress)
        except ShapeError:
            if self.shape is not None:
                raise
            self._needs_shape = True
        else:
            if t.given and t.classes is not None and self.num_classes is None:  # the range is known only now
                targets_in_range(
                    t.classes, res.outputs, self.canonical.output(self.options.output).name, self.options.class_axis
                )
            custom = opts.get("rules") is not None or self.options.rules is not None  # a user's rules may zero
            if m.family in GUARDED and opts.get("unit") is None and not custom:
                runner.guard(x, t, res)
            return res
        return self._specialised(x, m.name, target, target_weights, progress, options)

    def _run_many(self, x, m, target, opts, progress, options) -> Explanation:
        """K classes per item (``target`` [N, K]): attribution [N, K, ...] and target [N, K]. The gradient
        heads run the forward pass once and the K backward passes as one batch (``target_mode="classes"``,
        :class:`onnxplain.graph.backward.Fold`); other methods, and graphs the fold refuses, run once per
        column."""
        from onnxplain.graph.backward import FoldError
        from onnxplain.graph.rewrite import FOLDED

        t = as_array(target, "target")
        n = len(x) if self.inner is not None else len(self.check_input(x))
        if not np.issubdtype(t.dtype, np.integer) or t.shape[0] not in (1, n) or t.shape[1] < 1:
            raise OnnxplainError(
                f"many targets: target must be integer class indices of shape [N, K] = [{n}, K], "
                f"got {t.dtype} {list(t.shape)}"
            )
        t = np.ascontiguousarray(np.broadcast_to(t.astype(np.int64), (n, t.shape[1])))
        folded = (
            m.name in FOLDED
            and m.name not in self._no_fold
            and self.inner is None
            and not self._needs_shape
            and self.fixed_batch is None
            and not options.keys() - {"batch_size"}
            and t.shape[1] > 1  # one column: the plain graph, which tiles nothing
        )
        if folded:
            x = self.check_input(x)
            for k in range(t.shape[1]):
                self.check_target(t[:, k], n)
            try:
                batch = opts.get("batch_size") or 16
                with user_errors(f"{m.name} failed"):  # FOLD_CHUNK columns at a time
                    chunks = [
                        self.run_graph(
                            m.name, "classes", {self.x.name: x, "target": t[:, c : c + FOLD_CHUNK]}, {}, batch
                        )
                        for c in range(0, t.shape[1], FOLD_CHUNK)
                    ]
                res = replace(
                    chunks[0],
                    attribution=np.concatenate([r.attribution for r in chunks], 1),
                    target=np.concatenate([r.target for r in chunks], 1),
                )
            except FoldError:
                self._no_fold.add(m.name)  # this graph cannot fold (e.g. a tensor lost its batch axis)
            else:
                for k in range(t.shape[1]):  # the all-zero check, per target
                    self.guard(
                        x,
                        Target(res.target[:, k], None, True),
                        replace(res, attribution=res.attribution[:, k], target=res.target[:, k]),
                    )
                return res
        parts = [self.run(x, m.name, t[:, k], progress=progress, **options) for k in range(t.shape[1])]
        target_out = None if parts[0].target is None else np.stack([p.target for p in parts], 1)
        return Explanation(np.stack([p.attribution for p in parts], 1), target_out, parts[0].outputs)

    def _specialised(self, x, method, target, target_weights, progress, options) -> Explanation:
        """A rule needs a size or rank only known at run time: the same explanation on a child specialised
        to the input's own shape, the batch axis kept dynamic if that is enough (a sequence-first model,
        whose axis 0 is time, needs it fixed too)."""
        kw = dict(progress=progress, **options)
        if not self._needs_fixed_batch:
            try:
                return self.child(shape=(None, *x.shape[1:])).run(x, method, target, target_weights, **kw)
            except ShapeError:
                self._needs_fixed_batch = True
        return self.child(shape=tuple(x.shape)).run(x, method, target, target_weights, **kw)

    def guard(self, x: np.ndarray, target: Target, res: Explanation) -> None:
        """Refuse an attribution that is identically zero for an item whose explained score changes
        with the input (a path the walker did not see): :func:`onnxplain.graph.guard.check_not_silently_zero`."""
        a = res.attribution
        zero = [i for i in range(len(x)) if not (a[i].flat[:64].any() or a[i].any())]  # the head settles most maps
        if not zero:
            return
        from onnxplain.graph.guard import check_not_silently_zero
        from onnxplain.graph.rewrite import class_axis_of

        logits = self.logits
        # one check over the batch (fixed-batch models take no other): the score of the all-zero items only
        if target.weights is not None:
            w = np.zeros_like(target.weights)
            w[zero] = target.weights[zero]
        else:
            y = self._logits_session().run([logits.name], {self.x.name: x})[0]
            w = np.zeros_like(y)
            ax = class_axis_of(logits, self.options)
            for i in zero:
                np.moveaxis(w[i], ax - 1, 0)[int(res.target[i])] = 1.0
        check_not_silently_zero(self.canonical, self.x.name, x, w, np.zeros_like(x), output=logits.name)

    def _logits_session(self):
        """A session of the canonical model with the explained logits as an output."""
        from onnxplain.graph.canonicalize import export_graph

        return self._session_with_output(
            "logits", lambda: export_graph(self.canonical.graph, self.canonical.model), self.logits.name
        )

    def _session_with_output(self, key: str, model, name: str):
        """A cached session of ``model()`` with the tensor ``name`` among its outputs."""
        if key not in self._sessions:
            m = model()
            if name not in {o.name for o in m.graph.output}:
                m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
            self._sessions[key] = make_session(m, self.providers)
        return self._sessions[key]

    def child(self, shape=None, feeds: dict | None = None) -> Explainer:
        """This explainer specialised to an input ``shape`` (None on an axis: as declared) and/or more
        ``feeds``; cached."""
        feeds = {**self.feeds, **(feeds or {})}
        key = (
            tuple(shape) if shape is not None else None,
            tuple((k, np.asarray(v).tobytes(), np.shape(v)) for k, v in sorted(feeds.items())),
        )
        if key not in self._children:
            # an embedding's child explains the promoted tensor as its own input
            source = promote(self.source, self.inner) if self.inner is not None else self.source
            self._children[key] = Explainer(
                source,
                input=self.options.input if self.inner is not None else self.entry,
                feeds=feeds,
                input_shape=shape,
                **self._kw,
            )
        return self._children[key]

    def _run_inner(self, ids, m, target, target_weights, opts, progress) -> Explanation:
        """Explain an integer input through the float tensor it produces: per item, the ids are bound as
        constants and the embedding is the explained input; ``token_scores`` sums the map over the
        embedding axis (gradients times the embedding first, as grad x input)."""
        ids = self.check_entry(ids)
        n = len(ids)
        t = target if isinstance(target, Target) else self.target(ids, target, target_weights)
        if m.kind == "black-box" and self.entry_integer:  # tokens hidden by a replacement id, not embeddings
            return self._run_tokens(ids, m, t, opts, progress)
        emb = self._prefix().run([self.inner], {self.entry: ids})[0]
        parts = []
        for i in range(n):
            child = self.child(feeds={self.entry: ids[i : i + 1]})
            if t.spec is not None:  # a target object: resolved on the item itself
                kw = {"target": t.spec}
            elif t.weights is not None:
                kw = {"target_weights": t.weights[i : i + 1]}
            else:
                kw = {"target": t.classes[i : i + 1]}
            parts.append(child.run(emb[i : i + 1], m.name, progress=progress, **kw, **opts))
        a = np.concatenate([p.attribution for p in parts])
        outputs = {k: np.concatenate([p.outputs[k] for p in parts]) for k in parts[0].outputs}
        per_token = a * emb if m.name in GRADIENT_MAPS and a.shape == emb.shape else a
        outputs["token_scores"] = per_token.reshape(*per_token.shape[:2], -1).sum(axis=-1)
        outputs["embedding"] = emb
        target_out = None if parts[0].target is None else np.concatenate([p.target for p in parts])
        return Explanation(a, target_out, outputs)

    def _run_tokens(self, ids, m, t: Target, opts, progress) -> Explanation:
        """Occlusion, LIME and KernelSHAP over tokens (:mod:`onnxplain.methods.tokens`)."""
        from onnxplain.graph.rewrite import class_axis_of
        from onnxplain.methods import tokens

        if t.spec is not None:
            raise OnnxplainError(f"{m.name} over tokens takes a class or target_weights, not a target object")
        session, name = self.logits_of_entry()
        y = session.run([name], {self.entry: ids})[0]
        if t.weights is not None:
            seeds = np.asarray(t.weights, dtype=np.float64).reshape(y.shape)
            chosen = None
        else:
            logits = self.canonical.tensor(name)
            ax = class_axis_of(logits, self.options)
            scores = np.moveaxis(y, ax, 1).reshape(len(y), y.shape[ax], -1).sum(axis=2)
            chosen = np.where(t.classes < 0, scores.argmax(axis=1), t.classes).astype(np.int64)
            seeds = np.zeros(y.shape)
            for i, k in enumerate(chosen):
                np.moveaxis(seeds[i], ax - 1, 0)[k] = 1.0
        # one row per run where the batch is fixed at 1: by the input, or by a bound side input of batch 1
        # (a BERT's attention_mask [1, T] bound with feeds= cannot follow a batch of 16 masked copies)
        one = (self.entry_shape and self.entry_shape[0] == 1) or any(
            np.shape(v)[:1] == (1,) for v in self.feeds.values()
        )
        with user_errors(f"{m.name} over tokens failed"):
            a, outputs = tokens.explain(
                self, ids, m.name, seeds, {**opts, "batch_size": 1 if one else opts["batch_size"]}, progress
            )
        outputs[name] = y
        return Explanation(a, chosen, outputs)

    def logits_of_entry(self):
        """(session of the model as given, fed the integer input; the name of the explained logits)."""
        name = self.logits.name
        return self._session_with_output("entry_logits", lambda: bind(self.source, self.feeds), name), name

    def _prefix(self):
        """A session of the model as given with the embedding the integer input produces as an output."""
        return self._session_with_output("prefix", lambda: bind(self.source, self.feeds), self.inner)

    def check_entry(self, ids) -> np.ndarray:
        """Token ids (or bytes) for the integer input the embedding is computed from."""
        from onnxplain.graph.specialise import check_value

        vi = next(v for v in self.source.graph.input if v.name == self.entry)
        a = np.asarray(ids)
        integer = vi.type.tensor_type.elem_type not in FLOATS
        if a.dtype.kind not in ("iu" if integer else "iuf"):
            raise OnnxplainError(
                f"input '{self.entry}' takes {'integers (token ids)' if integer else 'numbers'}, got {a.dtype}"
            )
        if a.ndim == 0 or len(a) == 0:
            raise OnnxplainError(f"input '{self.entry}' needs a batch of at least one item")
        return check_value(vi, a, "input")

    def explain(self, x, method: str = "gradient", target=None, **kw) -> np.ndarray:
        """The attribution for ``x`` as a numpy array (see :meth:`run` for the options)."""
        return self.run(x, method, target, **kw).attribution


FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
# many targets in one pass: K columns of targets per run; at K = 32 the K-fold tiled activations were memory-bound
# (ResNet-18 and MobileNetV2, bench/bench_speed.py: 8 per run was as fast per target or faster)
FOLD_CHUNK = 8
GUARDED = ("gradient", "LRP", "DeepLIFT")  # families whose all-zero map is checked against finite differences
GRADIENT_MAPS = ("gradient", "smoothgrad", "guided_backprop", "deconvnet")  # maps to multiply by the embedding


def explained_tensor(model: onnx.ModelProto, name: str | None):
    """(graph input the user feeds, inner float tensor to explain or None) for ``input=name``."""
    floats = FLOATS
    inputs = {vi.name: vi for vi in model.graph.input}
    inits = {t.name for t in model.graph.initializer}
    real = [n for n in inputs if n not in inits]
    if name is None:
        name = next((n for n in real if inputs[n].type.tensor_type.elem_type in floats), None)
        if name is None:
            ints = [n for n in real if inputs[n].type.tensor_type.elem_type not in floats]
            if not ints:
                raise OnnxplainError("model has no input to explain")
            name = ints[0]
    if name in inputs:
        if inputs[name].type.tensor_type.elem_type in floats:
            return name, None
        inner = first_float(model, name)
        if inner is None:
            raise OnnxplainError(
                f"input '{name}' is not a float tensor, and no float tensor is computed from it "
                "(an embedding) to explain instead"
            )
        return name, inner
    # an inner tensor: explained as if it were an input, with the graph inputs bound per item
    real_float = [n for n in real if inputs[n].type.tensor_type.elem_type in floats]
    entry = real[0] if real else None
    if real_float and entry not in real_float:
        entry = real_float[0]
    return entry, name


def _fmt(shape):
    return "[" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in shape) + "]"
