"""What is explained: the explained scalar is ``sum(w * output)`` (design notes, "target").

:class:`Target` is what every method's ``run`` receives: one class per batch item (``-1``: the
arg-max) or a weight tensor ``w`` (a *seed*) of the explained output's shape.

Target objects name what users mean and turn into that seed from the model's outputs on ``x``
(``Explainer.run(x, method, target=Detection(box=...))``, or the CLI's ``--box``, ``--region``,
``--position``):

* :class:`Class` ``(k)``: class ``k`` on the class axis (the default for classifiers);
* :class:`Detection`: one predicted box of a detector without NMS (a :class:`Layout` says where
  boxes, objectness and class scores are; presets ``yolov5``, ``yolov8``, ``ssd``, ``detr``), or the
  pre-NMS candidate behind one selected detection of a graph with a ``NonMaxSuppression`` node;
  with ``coordinate=`` one box coordinate instead of the score (ODAM, Zhao et al., ICLR 2023);
* :class:`Region` ``(mask, cls)``: a class map summed (or averaged) inside a mask (segmenters, dense maps);
* :class:`Sequence` ``(position, token)``: one token at one timestep, or the ``char``-th character of
  the greedy CTC decode (Graves et al., ICML 2006: collapse repeats, drop blanks);
* :class:`Weights` ``(array)``: a hand-made seed.

:func:`guess_task` reads the output shapes (``classify``, ``detect``, ``segment``, ``sequence``);
:func:`resolve` picks the default target of a task and says in :attr:`Target.notes` what it chose.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from onnxplain.errors import OnnxplainError

TASKS = ("classify", "detect", "segment", "sequence")


@dataclass(frozen=True)
class Target:
    classes: np.ndarray | None  # int64 [N]; -1 means the arg-max class
    weights: np.ndarray | None = None  # instead of classes: a seed of the explained output's shape
    given: bool = False  # the user named it (a class or weights), rather than taking the arg-max
    explainer: object = None  # the Explainer whose explained tensor the weights seed (None: the one asked)
    spec: object = None  # the target object that made the weights (Detection, Region, ...)
    notes: tuple = ()  # one line per item: what is explained
    items: tuple = ()  # one dict per item for pictures and D-RISE: box, boxes, mask, caption, scores

    @property
    def mode(self) -> str:
        """The explanation graph's target mode: ``"class"`` or ``"weights"``."""
        return "class" if self.weights is None else "weights"


class Spec:
    """A target object: :meth:`resolve` turns it into a :class:`Target` for one batch ``x``."""

    def resolve(self, explainer, x: np.ndarray) -> Target:  # pragma: no cover - every subclass has one
        raise NotImplementedError


# ---- running the model once ------------------------------------------------------------------------
def forward(explainer, x: np.ndarray) -> dict:
    """Every output of the model on ``x`` plus ``driver_logits`` (the explained tensor)."""
    from onnxplain.runtime.driver import for_explainer

    return for_explainer(explainer).outputs(x)


def explained(explainer, outs: dict) -> np.ndarray:
    from onnxplain.runtime.driver import SCORE

    return outs[SCORE]


def sibling(explainer, output: str, model=None):
    """An Explainer like ``explainer`` that explains the tensor ``output`` (of ``model``, default the
    same model); ``explainer`` itself when it already does."""
    current = explainer.canonical.output(explainer.options.output).name
    if model is None and output == current:
        return explainer
    cache = explainer.__dict__.setdefault("_siblings", {})
    key = (output, id(model))
    if key not in cache:
        from onnxplain.runtime.explainer import Explainer

        o = explainer.options
        ex = Explainer(
            model if model is not None else explainer.canonical.model,
            input=o.input,
            output=output,
            probabilities=o.probabilities,
            channel_axis=o.channel_axis,
            rules=o.rules,
            providers=explainer.providers,
        )
        ex.task = getattr(explainer, "task", None)
        cache[key] = (ex, model)  # keep the model alive: the key holds its id
    return cache[key][0]


# ---- classes and weights ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Class(Spec):
    """Class ``index`` (``-1``: each item's arg-max) on the class axis of the explained output.

    The class axis is the explainer's ``class_axis`` or, by default, 1 for rank-4 outputs and the
    last axis otherwise; other axes (positions, pixels) are summed."""

    index: int | np.ndarray = -1

    def resolve(self, explainer, x):
        classes = explainer.check_target(self.index, len(x))
        out = explainer.canonical.output(explainer.options.output)
        note = f"class {'arg-max' if np.all(classes < 0) else classes.tolist()} on {class_axis_text(explainer, out)}"
        return Target(classes, None, not np.all(np.asarray(self.index) < 0), notes=(note,) * len(x), spec=self)


def class_axis_text(explainer, out) -> str:
    from onnxplain.graph.describe import fmt_shape

    shape = out.shape
    if shape is None:
        return f"the class axis of '{out.name}'"
    r = len(shape)
    ax = explainer.options.class_axis
    ax = (ax if ax is not None else (1 if r == 4 else r - 1)) % max(r, 1)
    summed = [i for i in range(1, r) if i != ax]
    tail = f", summed over axes {summed}" if summed else ""
    return f"axis {ax} of '{out.name}' {fmt_shape(list(shape))}{tail}"


@dataclass(frozen=True)
class Weights(Spec):
    """A seed of the explained output's shape: the explained scalar is ``sum(w * output)``."""

    array: np.ndarray = None

    def resolve(self, explainer, x):
        w = explainer.check_weights(self.array, x)
        return Target(None, w, True, spec=self, notes=("target weights (sum(w * output))",) * len(x))


# ---- boxes -----------------------------------------------------------------------------------------
def to_xyxy(b: np.ndarray, fmt: str) -> np.ndarray:
    """Boxes [..., 4] in ``fmt`` (``xyxy``, ``cxcywh``, ``xywh`` = top-left + size, ``yxyx``) -> xyxy."""
    b = np.asarray(b, np.float64)
    if fmt == "xyxy":
        return b
    if fmt == "yxyx":
        return b[..., [1, 0, 3, 2]]
    if fmt == "cxcywh":
        return np.stack(
            [
                b[..., 0] - b[..., 2] / 2,
                b[..., 1] - b[..., 3] / 2,
                b[..., 0] + b[..., 2] / 2,
                b[..., 1] + b[..., 3] / 2,
            ],
            -1,
        )
    if fmt == "xywh":
        return np.stack([b[..., 0], b[..., 1], b[..., 0] + b[..., 2], b[..., 1] + b[..., 3]], -1)
    raise OnnxplainError(f"box format must be xyxy, cxcywh, xywh or yxyx, not '{fmt}'")


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes a [..., 4] against b [M, 4] -> [..., M]."""
    a, b = np.asarray(a, np.float64)[..., None, :], np.asarray(b, np.float64)
    lt, rb = np.maximum(a[..., :2], b[..., :2]), np.minimum(a[..., 2:], b[..., 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area = lambda z: np.prod(np.clip(z[..., 2:] - z[..., :2], 0, None), axis=-1)  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


@dataclass(frozen=True)
class Layout:
    """Where a detector's candidates are (one row per anchor/query, before NMS).

    ``scores``: the tensor holding class scores (None: the explained output); ``boxes``: the tensor
    holding the 4 box numbers (None: the scores tensor). Both are ``[N, ...]`` of rank 3 with the
    candidates on ``anchor_axis`` (1 or 2) and the features on the other axis; a separate boxes
    tensor is ``[N, A, 4]``. Features: the box at ``box``..``box + 3`` in ``format`` (see
    :func:`to_xyxy`), ``objectness`` (a feature index, or None), class scores from ``classes`` on
    (``num_classes`` of them, default to the end). ``activation`` (none, sigmoid, softmax) turns the
    stored class scores into probabilities for ranking; ``background`` ("first", "last") drops a
    no-object class; ``normalized`` boxes are fractions of the input's width and height.
    """

    anchor_axis: int = 2
    box: int = 0
    classes: int = 4
    objectness: int | None = None
    num_classes: int | None = None
    format: str = "cxcywh"
    scores: str | None = None
    boxes: str | None = None
    separate: bool = False  # boxes and scores are two outputs (found by shape when not named)
    activation: str = "none"
    background: str | None = None
    normalized: bool = False
    boxes_anchor_axis: int = 1  # of a separate boxes tensor


#: Common layouts: YOLOv5 [N, A, 5 + C] (cx, cy, w, h, objectness, classes); YOLOv8 [N, 4 + C, A];
#: SSD-style boxes [N, A, 4] (xyxy) + scores [N, A, C] (class 0 background); DETR-style logits
#: [N, Q, C + 1] (last: no object, softmax) + boxes [N, Q, 4] (cxcywh, normalised).
PRESETS = {
    "yolov5": Layout(anchor_axis=1, box=0, objectness=4, classes=5),
    "yolov8": Layout(anchor_axis=2, box=0, classes=4),
    "ssd": Layout(anchor_axis=1, classes=0, format="xyxy", separate=True, background="first"),
    "detr": Layout(
        anchor_axis=1,
        classes=0,
        format="cxcywh",
        separate=True,
        activation="softmax",
        background="last",
        normalized=True,
    ),
}


def layout(spec) -> Layout:
    if isinstance(spec, Layout):
        return spec
    if spec not in PRESETS:
        raise OnnxplainError(f"unknown detector layout '{spec}' (choose from: {', '.join(PRESETS)}, or a Layout)")
    return PRESETS[spec]


@dataclass
class Candidates:
    """One item's candidates decoded by a :class:`Layout`."""

    boxes: np.ndarray  # [A, 4] xyxy in input pixels
    probs: np.ndarray  # [A, C] class probabilities (after the activation, background dropped)
    objectness: np.ndarray  # [A] (ones without objectness)

    @property
    def scores(self) -> np.ndarray:
        return self.probs * self.objectness[:, None]


def _moved(t: np.ndarray, anchor_axis: int) -> np.ndarray:
    """[N, A, F] view of a rank-3 [N, ...] tensor with candidates on ``anchor_axis``."""
    if t.ndim != 3:
        raise OnnxplainError(
            f"detector outputs must be rank 3 [N, anchors, features] or [N, features, anchors], got {list(t.shape)}"
        )
    return np.moveaxis(t, anchor_axis, 1)


def _act(z: np.ndarray, activation: str) -> np.ndarray:
    z = np.asarray(z, np.float64)
    if activation == "sigmoid":
        return 1 / (1 + np.exp(-z))
    if activation == "softmax":
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    if activation != "none":
        raise OnnxplainError(f"activation must be none, sigmoid or softmax, not '{activation}'")
    return z


@dataclass(frozen=True)
class Detection(Spec):
    """One detection of a detector: its class score (times objectness) is explained.

    Which one: the candidate whose box best matches ``box`` (IoU; xyxy in input pixels, within
    ``cls`` if given), else the best candidate of class ``cls``, else the top-scoring candidate;
    ``rank=k`` takes the k-th best distinct detection instead (greedy NMS at IoU 0.5). On a graph
    with a ``NonMaxSuppression`` node, ``selected=k`` explains the candidate behind the k-th
    selected detection of each item (its row of ``selected_indices`` read exactly); without
    ``box``/``cls`` the highest-scoring selected one.

    The seed: 1 at the candidate's class score; with objectness (``use_objectness``) the seed of
    ``obj * cls`` is its gradient: ``cls`` at the objectness entry and ``obj`` at the class entry.
    ``coordinate=0..3`` instead seeds that box number (in the layout's format) of the candidate
    (ODAM, Zhao et al. 2023: an explanation per box coordinate).
    """

    box: tuple | None = None
    cls: int | None = None
    layout: object = "yolov8"
    use_objectness: bool = True
    coordinate: int | None = None
    selected: int | None = None
    rank: int = 0

    # ---- the layout's tensors --------------------------------------------------------------------
    def plan(self, explainer):
        """(layout with tensor names filled in, explainer of the scores, explainer of the boxes)."""
        nms = find_nms(explainer.canonical.graph)
        if nms is not None:
            tapped, names = tap_nms(explainer, nms)
            lay = Layout(
                anchor_axis=2,
                classes=0,
                format="cxcywh" if nms.attrs.get("center_point_box", 0) else "yxyx",
                scores=names["scores"],
                boxes=names["boxes"],
                separate=True,
            )
            return lay, sibling(explainer, lay.scores, tapped), sibling(explainer, lay.boxes, tapped), names
        lay = layout(self.layout)
        g = explainer.canonical
        if lay.separate:
            outs = [t for t in g.graph.outputs if t.shape is not None and len(t.shape) == 3]
            boxes = lay.boxes or next((t.name for t in outs if t.shape[-1] == 4), None)
            scores = lay.scores or next((t.name for t in outs if t.name != boxes), None)
            if boxes is None or scores is None:
                raise OnnxplainError(
                    "a separate-outputs detector layout needs a boxes output [N, A, 4] and a scores "
                    "output [N, A, C]; name them in the Layout (scores=, boxes=)"
                )
            lay = replace(lay, boxes=boxes, scores=scores)
        else:
            name = lay.scores or g.output(explainer.options.output).name
            lay = replace(lay, scores=name, boxes=name)
        return lay, sibling(explainer, lay.scores), sibling(explainer, lay.boxes), None

    def decode(self, lay: Layout, outs: dict, i: int, size) -> Candidates:
        """Item ``i``'s candidates from ``outs`` (output name -> array; the explained tensor as
        ``driver_logits`` where the scores tensor is not an output)."""
        from onnxplain.runtime.driver import SCORE

        s = _moved(np.asarray(outs.get(lay.scores, outs[SCORE]))[i : i + 1], lay.anchor_axis)[0]
        bt = np.asarray(outs.get(lay.boxes, outs[SCORE]))[i : i + 1]
        b = _moved(bt, lay.boxes_anchor_axis if lay.separate else lay.anchor_axis)[0]
        boxes = to_xyxy(b[:, lay.box : lay.box + 4], lay.format)
        if lay.normalized:
            h, w = size
            boxes = boxes * np.array([w, h, w, h], np.float64)
        stop = s.shape[1] if lay.num_classes is None else lay.classes + lay.num_classes
        probs = _act(s[:, lay.classes : stop], lay.activation)
        if lay.background == "first":
            probs = probs[:, 1:]
        elif lay.background == "last":
            probs = probs[:, :-1]
        obj = (
            np.ones(len(s))
            if lay.objectness is None or not self.use_objectness
            else np.asarray(s[:, lay.objectness], np.float64)
        )
        return Candidates(boxes, probs, obj)

    def feature(self, lay: Layout, c: int) -> int:
        """The feature index of class ``c`` in the scores tensor."""
        return lay.classes + c + (1 if lay.background == "first" else 0)

    # ---- choosing ----------------------------------------------------------------------------------
    def choose(self, cand: Candidates, names, outs, i: int) -> tuple[int, int, str]:
        """(candidate, class, how it was chosen) for item ``i``."""
        scores = cand.scores
        if self.cls is not None and not 0 <= self.cls < scores.shape[1]:
            raise OnnxplainError(f"class {self.cls} out of range: the detector has {scores.shape[1]} classes")
        if names is not None and self.box is None and (self.cls is None or self.selected is not None):
            sel = np.asarray(outs[names["selected"]]).reshape(-1, 3)
            sel = sel[sel[:, 0] == i]
            if self.cls is not None:
                sel = sel[sel[:, 1] == self.cls]
            if len(sel) == 0:
                raise OnnxplainError(
                    f"NonMaxSuppression selected no detection for item {i}; give --box or --class "
                    "to explain a candidate"
                )
            if self.selected is not None:
                if not 0 <= self.selected < len(sel):
                    raise OnnxplainError(
                        f"selected detection {self.selected} out of range: NonMaxSuppression "
                        f"selected {len(sel)} for item {i}"
                    )
                k = self.selected
            else:
                k = int(np.argmax(scores[sel[:, 2], sel[:, 1]]))
            return int(sel[k, 2]), int(sel[k, 1]), f"NMS selection {k} (selected_indices row {sel[k].tolist()})"
        if self.box is not None:
            ov = iou(np.asarray(self.box, np.float64), cand.boxes)
            if self.cls is not None:
                pick = np.lexsort((scores[:, self.cls], ov))[-1]
                return int(pick), int(self.cls), f"best IoU {ov[pick]:.2f} with the given box"
            pick = np.lexsort((scores.max(axis=1), ov))[-1]
            return int(pick), int(scores[pick].argmax()), f"best IoU {ov[pick]:.2f} with the given box"
        if self.cls is not None:
            order = np.argsort(-scores[:, self.cls], kind="stable")
            pick = _distinct(cand.boxes, order, self.rank)
            return int(pick), int(self.cls), f"detection {self.rank} of class {self.cls}"
        order = np.argsort(-scores.max(axis=1), kind="stable")
        pick = _distinct(cand.boxes, order, self.rank)
        return int(pick), int(scores[pick].argmax()), "top detection" if self.rank == 0 else f"detection {self.rank}"

    def resolve(self, explainer, x):
        from onnxplain.runtime.driver import SCORE

        lay, sex, bex, names = self.plan(explainer)
        if names is not None:  # NMS outputs are not batch-first: one plain run, not the driver's batching
            outs = run_plain(tap_nms(explainer, None)[0], sex, x)
            outs[SCORE] = outs[lay.scores]  # the explained tensor (logits under a Sigmoid) has this shape
        else:
            outs = forward(sex, x)
        y = explained(sex, outs)
        size = spatial_size(explainer, x)
        n = len(x)
        if self.coordinate is not None:
            if self.coordinate not in (0, 1, 2, 3):
                raise OnnxplainError(f"coordinate must be 0, 1, 2 or 3 (a box number), not {self.coordinate}")
            target_ex = bex
            y = outs[lay.boxes] if names is not None else explained(bex, forward(bex, x)) if bex is not sex else y
        else:
            target_ex = sex
        w = np.zeros(y.shape, dtype=y.dtype)
        notes, items = [], []
        for i in range(n):
            cand = self.decode(lay, outs, i, size)
            a, c, how = self.choose(cand, names, outs, i)
            if self.coordinate is not None:
                wb = _moved(w[i : i + 1], lay.boxes_anchor_axis if lay.separate else lay.anchor_axis)
                wb[0, a, lay.box + self.coordinate] = 1.0
                what = f"box number {self.coordinate} ({lay.format}) of candidate {a}"
            else:
                ws = _moved(w[i : i + 1], lay.anchor_axis)  # a view: writes go to w
                with_obj = lay.objectness is not None and self.use_objectness
                ws[0, a, self.feature(lay, c)] = cand.objectness[a] if with_obj else 1.0
                if with_obj:  # d(obj * cls) = cls d(obj) + obj d(cls)
                    ws[0, a, lay.objectness] = cand.probs[a, c]
                what = f"class {c} score of candidate {a}" + (" x objectness" if with_obj else "")
            top = np.argsort(-cand.scores.max(axis=1), kind="stable")
            others = [int(k) for k in _keep(cand.boxes, top, 0.5, 10) if k != a and cand.scores[k].max() >= 0.25]
            bx = np.round(cand.boxes[a], 1).tolist()
            notes.append(f"{how}: {what}, box {bx}, score {cand.scores[a, c]:.3g}")
            items.append(
                {
                    "box": cand.boxes[a],
                    "boxes": cand.boxes[others],
                    "class": c,
                    "candidate": a,
                    "scores": cand.probs[a],
                    "objectness": float(cand.objectness[a]),
                    "caption": f"box {a} class {c} ({cand.scores[a, c]:.2f})",
                }
            )
        return Target(None, w, True, explainer=target_ex, spec=self, notes=tuple(notes), items=tuple(items))


def _keep(boxes, order, thr: float, limit: int) -> list:
    """Greedy NMS over ``order``: the indices kept (at most ``limit``)."""
    kept = []
    for k in order:
        if len(kept) >= limit:
            break
        if not kept or iou(boxes[k], boxes[kept]).max() < thr:
            kept.append(int(k))
    return kept


def _distinct(boxes, order, rank: int) -> int:
    kept = _keep(boxes, order, 0.5, rank + 1)
    if rank >= len(kept):
        raise OnnxplainError(f"detection rank {rank} out of range: {len(kept)} distinct detections")
    return kept[rank]


def spatial_size(explainer, x) -> tuple[int, int]:
    """(H, W) of an image batch ``x`` (the axes other than batch and channel)."""
    if x.ndim != 4:
        return (1, 1)
    c = explainer.options.channel_axis % 4
    h, w = [x.shape[a] for a in (1, 2, 3) if a != c]
    return h, w


# ---- NonMaxSuppression in the graph ----------------------------------------------------------------
def run_plain(model, explainer, x) -> dict:
    """Every output of ``model`` on ``x`` in one onnxruntime run."""
    from onnxplain.runtime.session import make_session

    sess = make_session(model, explainer.providers)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {explainer.x.name: x}), strict=True))


def find_nms(graph):
    """The graph's ``NonMaxSuppression`` node (ONNX spec: inputs boxes [N, A, 4], scores [N, C, A];
    output selected_indices [K, 3] = (batch, class, box)); None without one; an error with several."""
    nodes = [n for n in graph.nodes if n.op == "NonMaxSuppression"]
    if len(nodes) > 1:
        raise OnnxplainError(
            f"the graph has {len(nodes)} NonMaxSuppression nodes; explain one with a Layout "
            "naming its scores and boxes tensors"
        )
    return nodes[0] if nodes else None


def tap_nms(explainer, nms):
    """The model with NMS's boxes, scores and selected_indices as extra graph outputs (cached) and their names."""
    cache = explainer.__dict__.setdefault("_nms_tap", {})
    if "model" not in cache:
        import onnx

        m = onnx.ModelProto()
        m.CopyFrom(explainer.canonical.model)
        names = {"boxes": nms.inputs[0].name, "scores": nms.inputs[1].name, "selected": nms.outputs[0].name}
        have = {o.name for o in m.graph.output}
        tensors = {"boxes": nms.inputs[0], "scores": nms.inputs[1], "selected": nms.outputs[0]}
        for key, t in tensors.items():
            if names[key] not in have:
                dtype = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype or np.float32))
                shape = t.shape if t.shape is not None else [None] * (2 if key == "selected" else 3)
                m.graph.output.append(onnx.helper.make_tensor_value_info(names[key], dtype, shape))
        cache["model"], cache["names"] = m, names
    return cache["model"], cache["names"]


# ---- regions ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Region(Spec):
    """A class map inside a mask: ``sum`` (or ``mean``) of channel ``cls`` of a dense output over
    ``mask``'s pixels (segmenters, depth or saliency maps).

    The output is ``[N, C, H, W]`` (channels on the explainer's ``class_axis``, default 1) or
    ``[N, H, W]`` (one map). ``mask``: bool ``[H, W]`` or ``[N, H, W]`` on the output's grid or the
    input's (resized, nearest); None: the whole map. ``cls`` None: the class predicted (arg-max
    over channels) at most of the mask's pixels."""

    mask: np.ndarray | None = None
    cls: int | None = None
    reduce: str = "sum"

    def resolve(self, explainer, x):
        if self.reduce not in ("sum", "mean"):
            raise OnnxplainError(f"region reduce must be 'sum' or 'mean', not '{self.reduce}'")
        outs = forward(explainer, x)
        y = explained(explainer, outs)
        n = len(x)
        if y.ndim == 3:
            y4, ax = y[:, None], 1
        elif y.ndim == 4:
            ax = (explainer.options.class_axis if explainer.options.class_axis is not None else 1) % 4
            y4 = np.moveaxis(y, ax, 1)
        else:
            raise OnnxplainError(f"a region target needs a dense output [N, C, H, W] or [N, H, W], got {list(y.shape)}")
        hw = y4.shape[2:]
        masks = self.masks(n, hw)
        w4 = np.zeros(y4.shape, dtype=y.dtype)
        notes, items = [], []
        for i in range(n):
            m = masks[i]
            if not m.any():
                raise OnnxplainError(f"the region mask of item {i} is empty")
            if self.cls is not None:
                if not 0 <= self.cls < y4.shape[1]:
                    raise OnnxplainError(f"class {self.cls} out of range: the output has {y4.shape[1]} channels")
                c = int(self.cls)
            else:
                votes = np.bincount(y4[i].argmax(axis=0)[m], minlength=y4.shape[1]) if y4.shape[1] > 1 else [1]
                c = int(np.argmax(votes))
            w4[i, c] = m / m.sum() if self.reduce == "mean" else m
            share = f"{m.mean():.0%} of the map" if self.mask is not None else "the whole map"
            notes.append(f"{self.reduce} of channel {c} over {share} ({int(m.sum())} pixels)")
            items.append({"mask": m, "class": c, "caption": f"{self.reduce} of class {c} in the region"})
        w = w4[:, 0] if y.ndim == 3 else np.moveaxis(w4, 1, ax)
        return Target(None, np.ascontiguousarray(w), True, spec=self, notes=tuple(notes), items=tuple(items))

    def masks(self, n: int, hw) -> np.ndarray:
        if self.mask is None:
            return np.ones((n, *hw), dtype=bool)
        m = np.asarray(self.mask)
        if m.dtype != bool:
            if not np.all((m == 0) | (m == 1)):
                raise OnnxplainError("a region mask must be boolean or 0/1")
            m = m.astype(bool)
        if m.ndim == 2:
            m = np.broadcast_to(m, (n, *m.shape))
        if m.ndim != 3 or len(m) != n:
            raise OnnxplainError(f"a region mask must be [H, W] or [N, H, W] (N = {n}), got {list(m.shape)}")
        if m.shape[1:] != tuple(hw):  # nearest-neighbour onto the output's grid
            rows = (np.arange(hw[0]) + 0.5) * m.shape[1] / hw[0]
            cols = (np.arange(hw[1]) + 0.5) * m.shape[2] / hw[1]
            m = m[:, rows.astype(int)][:, :, cols.astype(int)]
        return np.ascontiguousarray(m)


# ---- sequences -------------------------------------------------------------------------------------
def ctc_greedy(path: np.ndarray, blank: int = 0) -> list[tuple[int, int, int]]:
    """Greedy CTC decoding (Graves et al. 2006) of an arg-max path [T]: collapse repeats, drop blanks.
    Returns one (token, first timestep, last timestep) per decoded character."""
    out = []
    prev = None
    for t, k in enumerate(np.asarray(path).tolist()):
        if k != prev and k != blank:
            out.append([k, t, t])
        elif k == prev and k != blank and out:
            out[-1][2] = t
        prev = k
    return [tuple(o) for o in out]


@dataclass(frozen=True)
class Sequence(Spec):
    """One token at one timestep of a sequence output ``[N, T, V]`` (batch first; the vocabulary on
    the last axis): CTC recognisers, taggers, language models.

    ``position=t`` (negative counts from the end) and ``token`` (default: the arg-max at ``t``), or
    ``char=k``: the k-th character of the greedy CTC decode, explained at the timestep of its run
    where that character scores highest. Neither: the arg-max path (every timestep's arg-max token).
    """

    position: int | None = None
    token: int | None = None
    char: int | None = None
    blank: int = 0

    def resolve(self, explainer, x):
        outs = forward(explainer, x)
        y = explained(explainer, outs)
        if y.ndim != 3:
            raise OnnxplainError(f"a sequence target needs an output [N, T, V], got {list(y.shape)}")
        n, t_len, v = y.shape
        if self.position is not None and self.char is not None:
            raise OnnxplainError("give a position or a character index, not both")
        w = np.zeros(y.shape, dtype=y.dtype)
        notes, items = [], []
        for i in range(n):
            path = y[i].argmax(axis=1)
            decoded = ctc_greedy(path, self.blank)
            text = " ".join(str(k) for k, _, _ in decoded)
            if self.char is not None:
                if not -len(decoded) <= self.char < len(decoded):
                    raise OnnxplainError(
                        f"character {self.char} out of range: the greedy decode of item {i} has "
                        f"{len(decoded)} characters"
                    )
                k, t0, t1 = decoded[self.char]
                t = t0 + int(np.argmax(y[i, t0 : t1 + 1, k]))
                w[i, t, k] = 1
                what = f"character {self.char % len(decoded)} of the greedy decode [{text}]: token {k} at timestep {t}"
                cap = f"char {self.char % len(decoded)} = token {k} (t={t})"
            elif self.position is not None:
                if not -t_len <= self.position < t_len:
                    raise OnnxplainError(f"position {self.position} out of range: the output has {t_len} timesteps")
                t = self.position % t_len
                k = int(path[t]) if self.token is None else int(self.token)
                if not 0 <= k < v:
                    raise OnnxplainError(f"token {k} out of range: the vocabulary has {v} entries")
                w[i, t, k] = 1
                what = f"token {k} at timestep {t}" + (" (the arg-max)" if self.token is None else "")
                cap = f"t={t} token {k}"
            else:
                w[i, np.arange(t_len), path] = 1
                what = f"the arg-max path over {t_len} timesteps (greedy decode [{text}])"
                cap = "arg-max path"
            notes.append(what)
            items.append({"caption": cap, "decoded": text})
        return Target(None, w, True, spec=self, notes=tuple(notes), items=tuple(items))


# ---- tasks and defaults ----------------------------------------------------------------------------
def guess_task(graph) -> tuple[str, str]:
    """(task, why) from the graph's output shapes: ``detect`` for a NonMaxSuppression node, a rank-3
    output with a box-like feature axis (>= 5 features against >= 4x as many anchors), or boxes
    [N, A, 4] beside scores; ``segment`` for [N, C, H, W] with H, W > 1; ``sequence`` for other
    rank-3 outputs; ``classify`` otherwise."""
    if find_nms(graph) is not None:
        return "detect", "the graph has a NonMaxSuppression node"
    outs = [t for t in graph.outputs if t.shape is not None]
    dims = lambda t: [d if isinstance(d, int) else -1 for d in t.shape]  # noqa: E731
    three = [t for t in outs if len(t.shape) == 3]
    if any(dims(t)[-1] == 4 for t in three) and len(three) > 1:
        return "detect", "a boxes output [N, A, 4] beside a scores output"
    for t in outs:
        d = dims(t)
        if len(d) == 3 and min(d[1:]) >= 5 and max(d[1:]) >= 4 * min(d[1:]) and max(d[1:]) >= 64:
            return "detect", f"'{t.name}' {d} looks like [N, 4 + C, anchors] or [N, anchors, 5 + C]"
    first = outs[0] if outs else None
    if first is not None:
        d = dims(first)
        if len(d) == 4 and (d[2] > 1 or d[2] == -1) and (d[3] > 1 or d[3] == -1):
            return "segment", f"'{first.name}' {d} is a dense map [N, C, H, W]"
        if len(d) == 3:
            return "sequence", f"'{first.name}' {d} looks like [N, T, V]"
    return "classify", "class scores"


def default_spec(explainer, target):
    """The target object for a plain class ``target`` (None: the default) under the explainer's task
    (``explainer.task``; None: guessed for detectors only, whose plain class axis is meaningless)."""
    task = getattr(explainer, "task", None)
    if task is not None and task not in TASKS:
        raise OnnxplainError(f"task must be one of {', '.join(TASKS)}, not '{task}'")
    if task is None:  # the guess walks the graph's nodes: once per explainer
        if "_guessed_task" not in explainer.__dict__:
            explainer._guessed_task = guess_task(explainer.canonical.graph)[0]
        guessed = explainer._guessed_task
        task = guessed if guessed == "detect" else None
    k = None if target is None else int(np.asarray(target).reshape(-1)[0])
    if task == "detect":
        return Detection(cls=None if k is None or k < 0 else k, layout=getattr(explainer, "layout", None) or "yolov8")
    if task == "segment":
        return Region(cls=None if k is None or k < 0 else k)
    if task == "sequence" and target is None:
        return Sequence()
    return None


def resolve(explainer, x: np.ndarray, target=None, target_weights=None) -> Target:
    """What to explain for the batch ``x``: a :class:`Target` (given as is), a target object, class
    indices (``-1``/None: the default of the task) or ``target_weights``."""
    if isinstance(target, Target):
        return target
    if target_weights is not None:
        if target is not None:
            raise OnnxplainError("give either target or target_weights, not both")
        return None  # the explainer's own path
    if isinstance(target, Spec):
        return target.resolve(explainer, x)
    if target is None or np.ndim(target) == 0 or np.size(target) == 1:
        spec = default_spec(explainer, target)
        if spec is not None:
            return spec.resolve(explainer, x)
    return None  # plain classes: the explainer's own path


__all__ = [
    "Class",
    "Detection",
    "Layout",
    "PRESETS",
    "Region",
    "Sequence",
    "Target",
    "Weights",
    "ctc_greedy",
    "guess_task",
    "resolve",
]
