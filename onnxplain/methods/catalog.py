"""Every attribution method, one :class:`~onnxplain.methods.table.Method` entry each: :data:`METHODS`.

The entries hold what users see (names, options, help, papers) and a ``run`` with the one calling
convention of :mod:`onnxplain.methods.table`; the work is done in the method modules beside this one.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from onnxplain.errors import OnnxplainError
from onnxplain.methods import (
    attention,
    cam,
    cam_forward,
    deeplift,
    drise,
    gradient,
    lime,
    lrp,
    modified,
    occlusion,
    perturbation,
    rise,
)
from onnxplain.methods.table import Method, Option, Table, finite_array
from onnxplain.runtime.result import Explanation

# ---- runners: run(explainer, x, target, options, progress) -> Explanation ------------------------------
GRAPH_PARAMS = ("layer", "prefix_tokens", "rules")  # options that change how the explanation graph is built


def run_head(explainer, x, target, opts, progress=None, *, method: str):
    """Graph kinds: one run of the method's explanation graph (``unit``: feature visualisation instead)."""
    if opts.get("unit") is not None:
        from onnxplain.methods.featurevis import explain_unit

        if target.given:
            raise OnnxplainError("give either a unit or a target, not both")
        attribution, outputs = explain_unit(
            explainer,
            x,
            method,
            opts["unit"],
            opts["batch_size"],
            {"rules": opts["rules"]} if opts.get("rules") else None,
        )
        return Explanation(attribution, None, outputs)
    params = {k: opts[k] for k in GRAPH_PARAMS if opts.get(k) is not None}
    feeds = explainer.graph_feeds(x, target)
    if opts.get("baseline") is not None:
        feeds["baseline"] = explainer.check_baseline(opts["baseline"], x)
        params["baseline_input"] = True  # (else deeplift's graph holds a fixed zero baseline)
    return explainer.run_graph(method, target.mode, feeds, params, batch_size=opts["batch_size"])


def run_forward_cam(explainer, x, target, opts, progress=None, *, method: str):
    a, _, chosen, outputs = cam_forward.explain(
        explainer,
        x,
        method,
        target.classes,
        target.weights,
        layer=opts["layer"],
        batch_size=opts["batch_size"],
        score=opts.get("score", "softmax"),
        progress=progress,
        prefix_tokens=opts["prefix_tokens"],
    )
    return Explanation(a, chosen, outputs)


def run_occlusion(explainer, x, target, opts, progress=None):
    keys = ("window", "stride", "fill", "blur", "score", "batch_size")
    a, chosen, outputs = occlusion.explain(
        explainer, x, target.classes, target.weights, progress=progress, **{k: opts[k] for k in keys}
    )
    return Explanation(a, chosen, outputs)


def run_rise(explainer, x, target, opts, progress=None):
    keys = ("n_masks", "cells", "p", "seed", "score", "batch_size")
    a, chosen, outputs = rise.explain(
        explainer, x, target.classes, target.weights, progress=progress, **{k: opts[k] for k in keys}
    )
    return Explanation(a, chosen, outputs)


def run_drise(explainer, x, target, opts, progress=None):
    keys = ("n_masks", "cells", "p", "seed", "batch_size")
    a, outputs = drise.explain(explainer, x, target, progress=progress, **{k: opts[k] for k in keys})
    return Explanation(a, None, outputs)


def run_perturbation(explainer, x, target, opts, progress=None, *, method: str):
    a, chosen, outputs = perturbation.explain(
        explainer, x, target.classes, target.weights, method=method, progress=progress, **opts
    )
    return Explanation(a, chosen, outputs)


def run_superpixels(explainer, x, target, opts, progress=None, *, method: str):
    seg = {k: opts[k] for k in SEGMENTATION_PARAMS if opts.get(k) is not None}
    own = {k: v for k, v in opts.items() if k not in SEGMENTATION_PARAMS}
    a, chosen, outputs = lime.explain(
        explainer, x, method, target.classes, target.weights, progress=progress, **own, **seg
    )
    return Explanation(a, chosen, outputs)


# ---- options ------------------------------------------------------------------------------------------
def _unit(where, value):
    from onnxplain.methods.featurevis import check_unit, parse_unit

    try:
        return check_unit(parse_unit(value) if isinstance(value, str) else value)
    except OnnxplainError as exc:
        raise OnnxplainError(f"{where}: {exc}") from None


def _pair_or_int(where, value):
    """A positive int or an (h, w) pair of them; on the command line "8" or "8,16"."""
    if isinstance(value, str):
        try:
            value = tuple(int(v) for v in value.split(",")) if "," in value else int(value)
        except ValueError:
            raise OnnxplainError(f"{where} must be a positive integer or two of them (H,W), not {value!r}") from None
    try:
        t = (value, value) if np.ndim(value) == 0 else tuple(value)
        bad = len(t) != 2 or any(isinstance(a, bool) or int(a) != a or a < 1 for a in t)
    except (TypeError, ValueError):
        bad = True
    if bad:
        raise OnnxplainError(f"{where} must be a positive integer or a pair of them, not {value!r}")
    return value


UNIT = Option(
    "unit",
    object,
    None,
    "explain one channel/unit of an inner tensor instead of a class: "
    "LAYER:CHANNEL[:Y:X] (API: (layer, channel[, y, x]))",
    check=_unit,
)
RULES = Option(
    "rules",
    str,
    None,
    "a rule-set file (TOML) replacing the method's rules/<method>.toml",
    check=lambda where, v: str(v),
)
BASELINE = Option(
    "baseline",
    float,
    None,
    "the reference input x' (a number, or an array broadcast to x; default zeros)",
    check=finite_array,
)
LAYER = Option(
    "layer",
    str,
    None,
    "the layer to tap, a tensor or node name (default: the automatic choice that `onnxplain inspect` marks)",
    check=lambda where, v: str(v),
)
PREFIX = Option(
    "prefix_tokens",
    int,
    None,
    "token maps [N, T, D]: tokens before the patch grid (class and register tokens; default: from the shapes)",
    min=0,
)
SCORE = Option(
    "score",
    str,
    "softmax",
    "what a perturbed pass scores: the target's softmax probability or its logit",
    choices=("softmax", "logit"),
)
#: the optimised masks score logits by default: a confident prediction's softmax is flat (its gradient
#: p (1 - p) vanishes), which left meaningful perturbation's maps empty and extremal perturbation's to
#: its area term alone
SCORE_LOGIT = Option("score", str, "logit", SCORE.help, choices=SCORE.choices)
SEED = Option("seed", int, 0, "random seed")
FILL = Option(
    "fill",
    float,
    "blur",
    "what hidden superpixels show: blur (the item blurred, sigma a quarter of "
    "its side), image_mean (the item's per-channel mean; 'mean' too), segment_mean (each superpixel's "
    "own mean colour: hides nothing on flat objects) or a value in tensor space",
    choices=lime.FILLS,
)
SEGMENTATION_PARAMS = ("n_segments", "compactness", "kernel_size", "max_dist", "ratio", "scale", "sigma", "min_size")
SUPERPIXEL_OPTIONS = (
    Option(
        "segmentation",
        str,
        "slic",
        "superpixels by slic, quickshift or felzenszwalb (scikit-image)",
        choices=lime.SEGMENTATIONS,
    ),
    Option("segments", object, None, "explicit superpixels: an int label map [H, W] or [N, H, W]", cli=False),
    FILL,
    SEED,
    Option("n_segments", int, None, "slic: about how many superpixels (50)", min=1),
    Option("compactness", float, None, "slic: colour vs. space (10)", above=0, cli=False),
    Option("kernel_size", float, None, "quickshift: Gaussian kernel width", above=0, cli=False),
    Option("max_dist", float, None, "quickshift: cut-off distance (200)", above=0, cli=False),
    Option("ratio", float, None, "quickshift: colour vs. space (0.2)", min=0, max=1, cli=False),
    Option("scale", float, None, "felzenszwalb: larger means larger segments", above=0, cli=False),
    Option("sigma", float, None, "slic, felzenszwalb: Gaussian pre-smoothing", min=0, cli=False),
    Option("min_size", int, None, "felzenszwalb: smallest segment in pixels", min=1, cli=False),
)
PERTURBATION_OPTIONS = (
    Option("iterations", int, 300, "Adam steps", min=0),
    Option("lr", float, 0.1, "Adam step size", above=0),
    Option(
        "mask_size",
        object,
        None,
        "the mask's grid (int or (h, w); default: an eighth of the image)",
        check=_pair_or_int,
        cli=False,
    ),
    Option("blur", float, 10.0, "sigma of the Gaussian blur that hidden pixels show", min=0),
    SEED,
    SCORE_LOGIT,
    Option("jitter", int, 0, "random shifts of the mask per step (pixels)", min=0),
)


def _head(name, family, summary, paper, head, options=(), aliases=(), map="signed", shape="the input's"):
    return Method(
        name, family, "graph", map, summary, paper, partial(run_head, method=name), options, aliases, shape, head
    )


def _cam(name, summary, paper, aliases=(), map="non-negative", extra=(), shape="[N, 1, H, W]"):
    return _head(name, "CAM", summary, paper, cam.HEADS[name], (LAYER, PREFIX, *extra), aliases, map, shape)


METHODS = Table(
    (
        _head(
            "gradient",
            "gradient",
            "the raw, signed gradient of the explained score",
            "Simonyan et al. 2014",
            gradient.HEADS["gradient"],
            (UNIT,),
            ("vanilla_gradient", "grad"),
        ),
        _head(
            "saliency",
            "gradient",
            "max over channels of |gradient|",
            "Simonyan et al. 2014",
            gradient.HEADS["saliency"],
            map="non-negative",
            shape="[N, 1, H, W]",
        ),
        _head(
            "input_x_gradient",
            "gradient",
            "x times the gradient",
            "Shrikumar et al. 2016",
            gradient.HEADS["input_x_gradient"],
            aliases=("gradient_x_input", "grad_x_input", "gxi"),
        ),
        Method(
            "smoothgrad",
            "gradient",
            "looped",
            "signed",
            "mean gradient over noisy copies of x",
            "Smilkov et al. 2017",
            partial(gradient.run_looped, method="smoothgrad"),
            (
                Option("samples", int, 16, "noisy copies", min=1),
                Option("noise", float, 0.15, "sigma / (max(x) - min(x))", min=0),
                SEED,
            ),
            ("sg",),
            head=gradient.HEADS["smoothgrad"],
        ),
        Method(
            "smoothgrad_sq",
            "gradient",
            "looped",
            "non-negative",
            "mean squared gradient over noisy copies",
            "Smilkov et al. 2017",
            partial(gradient.run_looped, method="smoothgrad_sq"),
            (
                Option("samples", int, 16, "noisy copies", min=1),
                Option("noise", float, 0.15, "sigma / (max(x) - min(x))", min=0),
                SEED,
            ),
            head=gradient.HEADS["smoothgrad_sq"],
        ),
        Method(
            "integrated_gradients",
            "gradient",
            "looped",
            "signed",
            "(x - x') times the mean gradient on the straight path from the baseline x'",
            "Sundararajan et al. 2017",
            partial(gradient.run_looped, method="integrated_gradients"),
            (
                Option("steps", int, 32, "path points (trapezoid rule)", min=1),
                BASELINE,
                Option("chunk", int, 8, "path points per forward+backward pass (batch_size caps it)", min=1),
            ),
            ("ig",),
            head=gradient.HEADS["integrated_gradients"],
        ),
        _head(
            "guided_backprop",
            "modified backward rules",
            "ReLUs pass only positive gradients where x > 0",
            "Springenberg et al. 2015",
            modified.HEADS["guided_backprop"],
            (UNIT, RULES),
            ("guided_backpropagation", "guided"),
        ),
        _head(
            "deconvnet",
            "modified backward rules",
            "ReLUs pass only positive gradients",
            "Zeiler & Fergus 2014",
            modified.HEADS["deconvnet"],
            (UNIT, RULES),
        ),
        *(
            _head(
                m,
                "LRP",
                lrp.SUMMARIES[m],
                "Bach et al. 2015; Montavon et al. 2019",
                lrp.HEADS[m],
                (RULES,),
                ("lrp",) if m == "lrp_epsilon" else (),
            )
            for m in lrp.METHODS
        ),
        _head(
            "attnlrp",
            "LRP",
            "AttnLRP: epsilon on linear layers, uniform rule on products of activations, "
            "softmax rule, frozen norm statistics",
            "Achtibat et al. 2024",
            attention.HEADS["attnlrp"],
            (RULES,),
        ),
        _head(
            "cp_lrp",
            "LRP",
            "LRP with the attention weights and norm statistics held constant",
            "Ali et al. 2022",
            attention.HEADS["cp_lrp"],
            (RULES,),
            ("conservative_propagation",),
        ),
        _head(
            "attention_rollout",
            "attention",
            "head-averaged attention plus identity, multiplied across layers",
            "Abnar & Zuidema 2020",
            attention.HEADS["attention_rollout"],
            (PREFIX,),
            ("rollout",),
            "non-negative",
            "[N, 1, H, W] (images), [N, T] (tokens)",
        ),
        _head(
            "chefer",
            "attention",
            "I + mean over heads of ReLU(gradient x attention), accumulated over layers",
            "Chefer et al. 2021 (ICCV)",
            attention.HEADS["chefer"],
            (PREFIX,),
            ("generic_attention",),
            "non-negative",
            "[N, 1, H, W] (images), [N, T] (tokens)",
        ),
        _head(
            "deeplift",
            "DeepLIFT",
            "rescale rule: (x - x') times the multipliers",
            "Shrikumar et al. 2017",
            deeplift.HEADS["deeplift"],
            (BASELINE, RULES),
        ),
        _cam("gradcam", "ReLU of the layer weighted by its mean gradient per channel", "Selvaraju et al. 2017"),
        _cam(
            "gradcam_pp",
            "Grad-CAM++: weights from second-order terms",
            "Chattopadhay et al. 2018",
            ("gradcam_plus_plus",),
        ),
        _cam("hirescam", "ReLU of the layer times its gradient, summed over channels", "Draelos & Carin 2020"),
        _cam("layercam", "ReLU of the layer times ReLU of its gradient", "Jiang et al. 2021"),
        _cam("xgradcam", "gradient weights normalised by the activation sum", "Fu et al. 2020"),
        _cam(
            "guided_gradcam",
            "Grad-CAM times guided backprop",
            "Selvaraju et al. 2017",
            map="signed",
            extra=(RULES,),
            shape="the input's",
        ),
        Method(
            "scorecam",
            "CAM (forward passes)",
            "forward",
            "non-negative",
            "channels weighted by the score of the input masked with each",
            "Wang et al. 2020",
            partial(run_forward_cam, method="scorecam"),
            (LAYER, PREFIX, SCORE),
            shape="[N, 1, H, W]",
        ),
        Method(
            "ablationcam",
            "CAM (forward passes)",
            "forward",
            "non-negative",
            "channels weighted by the score drop when each is zeroed",
            "Desai & Ramaswamy 2020",
            partial(run_forward_cam, method="ablationcam"),
            (LAYER, PREFIX),
            shape="[N, 1, H, W]",
        ),
        Method(
            "occlusion",
            "perturbation",
            "black-box",
            "signed",
            "score drop when a sliding patch is hidden",
            "Zeiler & Fergus 2014",
            run_occlusion,
            (
                Option("window", int, 8, "patch size in pixels (H,W for a rectangle)", check=_pair_or_int),
                Option("stride", int, None, "patch step (default: the window)", check=_pair_or_int),
                Option(
                    "fill",
                    float,
                    0.0,
                    "what hidden patches show: a value in tensor space or 'mean' (the item's)",
                    choices=("mean",),
                ),
                Option(
                    "blur",
                    float,
                    None,
                    "patches show the image blurred with this Gaussian sigma instead of fill",
                    min=0,
                ),
                SCORE,
            ),
            shape="[N, 1, H, W]",
        ),
        Method(
            "rise",
            "perturbation",
            "black-box",
            "offset",
            "mean score of random masks, weighted by each mask",
            "Petsiuk et al. 2018",
            run_rise,
            (
                Option("n_masks", int, 2000, "random masks", min=1),
                Option("cells", int, 7, "mask grid cells per side", min=1),
                Option("p", float, 0.5, "probability that a cell is kept", above=0, max=1),
                SEED,
                SCORE,
            ),
            shape="[N, 1, H, W]",
        ),
        Method(
            "d_rise",
            "perturbation",
            "black-box",
            "offset",
            "random masks weighted by how well the masked image's detections match the explained box "
            "(IoU x cosine of class scores)",
            "Petsiuk et al. 2021",
            run_drise,
            (
                Option("n_masks", int, 1000, "random masks", min=1),
                Option("cells", int, 8, "mask grid cells per side", min=1),
                Option("p", float, 0.5, "probability that a cell is kept", above=0, max=1),
                SEED,
            ),
            shape="[N, 1, H, W]",
        ),
        Method(
            "lime",
            "superpixels",
            "black-box",
            "signed",
            "a weighted linear model of the score over superpixels",
            "Ribeiro et al. 2016",
            partial(run_superpixels, method="lime"),
            (
                Option("samples", int, 1000, "perturbed samples", min=1),
                *SUPERPIXEL_OPTIONS,
                Option("kernel_width", float, 0.25, "width of the exponential kernel on cosine distance", above=0),
                Option("alpha", float, 1.0, "ridge penalty", min=0, cli=False),
            ),
            shape="[N, 1, H, W]",
        ),
        Method(
            "kernelshap",
            "superpixels",
            "black-box",
            "signed",
            "Shapley values of superpixels by weighted regression",
            "Lundberg & Lee 2017",
            partial(run_superpixels, method="kernelshap"),
            (Option("samples", int, 2048, "coalitions", min=1), *SUPERPIXEL_OPTIONS),
            ("shap",),
            "[N, 1, H, W]",
        ),
        Method(
            "meaningful_perturbation",
            "perturbation",
            "optimised",
            "offset",
            "the smallest blurred region that destroys the score",
            "Fong & Vedaldi 2017",
            partial(run_perturbation, method="meaningful_perturbation"),
            (
                *PERTURBATION_OPTIONS,
                Option(
                    "l1",
                    float,
                    1.0,
                    "weight of the deleted fraction of the image, against the score drop that blurring all of it gives",
                    min=0,
                ),
                Option("tv", float, 1e-2, "weight of the mask's total variation", min=0),
                Option("beta", float, 3.0, "exponent of the total variation", above=0),
            ),
            shape="[N, 1, H, W]",
        ),
        Method(
            "extremal_perturbation",
            "perturbation",
            "optimised",
            "offset",
            "the region of a given area that best keeps the score",
            "Fong et al. 2019",
            partial(run_perturbation, method="extremal_perturbation"),
            (
                *PERTURBATION_OPTIONS,
                Option("area", float, 0.1, "fraction of the image kept", above=0, max=1),
                Option("area_weight", float, 300.0, "weight of the area constraint", min=0),
            ),
            shape="[N, 1, H, W]",
        ),
    )
)


def method(name: str) -> Method:
    """The method called ``name`` (any spelling or alias), or a one-line error with suggestions."""
    return METHODS.get(name)
