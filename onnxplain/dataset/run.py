"""The driver side of a dataset run: plan the shards, start (or join) Ray, stream them through an actor pool.

No scheduler of our own: the shards are a ``ray.data.Dataset`` and ``map_batches`` runs the
:class:`~onnxplain.dataset.worker.Worker` UDF in a fixed actor pool (``ActorPoolStrategy``); Ray Data
does the placement, back-pressure and retries. The driver only validates, plans, counts and, at the end,
gathers the small tables (errors, the evaluation summary).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from onnxplain.dataset import sources, store
from onnxplain.dataset.worker import Job, Worker, rows_of, sanity_task
from onnxplain.errors import OnnxplainError

INSTALL = 'pip install "onnxplain[ray]"'


def require_ray():
    """The ``ray`` module with Ray Data, or a one-line error saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise OnnxplainError(
            f"dataset runs need Ray Data, which is not installed; install it with: {INSTALL}"
        ) from None
    return ray


def init(address: str | None = None, num_cpus: int | None = None, runtime_env: dict | None = None):
    """Join the Ray cluster at ``address`` (or ``RAY_ADDRESS``); without one, start a local Ray on this
    machine's cores. An already initialised Ray (a notebook, a test) is used as it is."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    kw = {"runtime_env": runtime_env} if runtime_env else {}
    if address:
        try:
            ray.init(address=address, **kw)
        except (ConnectionError, TimeoutError, ValueError, RuntimeError) as exc:
            raise OnnxplainError(
                f"cannot connect to the Ray cluster at {address}: {' '.join(str(exc).split())[:300]}"
            ) from None
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False, **kw)
    return ray


def client_mode(ray) -> bool:
    """True when connected through Ray Client (``ray://``): this process is not part of the cluster."""
    try:
        return bool(ray.util.client.ray.is_connected())
    except Exception:  # noqa: BLE001
        return False


def on_cluster(ray, fn, model, args: tuple, kwargs: dict):
    """Run ``fn`` (the whole driver side) as a task inside the cluster: through Ray Client, Ray Data cannot
    stream, and the paths (source, output) are the cluster's. The model travels as a ModelProto."""
    from onnxplain.graph.load import load_model

    task = ray.remote(num_cpus=0)(fn)
    kwargs = {**kwargs, "address": None, "progress": None}
    try:
        return ray.get(task.remote(load_model(model), *args, **kwargs))
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, OnnxplainError):
            raise OnnxplainError(str(cause).splitlines()[0]) from None
        raise


def is_ray_dataset(source) -> bool:
    return type(source).__module__.startswith("ray.data") and hasattr(source, "map_batches")


# ---- validation on the driver ----------------------------------------------------------------------------
def _model(model):
    from onnxplain.graph.load import load_model

    proto = load_model(model)
    data = proto.SerializeToString()
    return proto, data, hashlib.sha256(data).hexdigest()[:16]


def _methods(methods, options: dict | None, settings: dict | None) -> tuple[list, dict]:
    from onnxplain.methods.catalog import method

    values = [methods] if isinstance(methods, str) else list(methods or ["gradient"])
    chosen = list(
        {m.name: m for m in (method(p.strip()) for v in values for p in str(v).split(",") if p.strip())}.values()
    )
    if not chosen:
        raise OnnxplainError("no methods given")
    if settings is not None:  # the command line's, already validated
        return [m.name for m in chosen], {
            k: {o: v for o, v in s.items() if o != "batch_size"} for k, s in settings.items()
        }
    options = dict(options or {})
    for k in options:
        if not any(m.option(k) for m in chosen):
            raise OnnxplainError(f"option '{k}' does not apply to {', '.join(m.name for m in chosen)}")
    out = {}
    for m in chosen:
        given = {k: v for k, v in options.items() if m.option(k)}
        m.settings(given)  # validates
        out[m.name] = {k: v for k, v in given.items() if k != "batch_size"}
    return [m.name for m in chosen], out


def _setup(
    model,
    source,
    kind: str,
    methods,
    target,
    output,
    *,
    options,
    settings,
    shard_size,
    batch_size,
    preset,
    size,
    mean,
    std,
    layout,
    explainer_kw,
    threads,
    gpus_per_actor,
    providers,
    resume,
    extra,
):
    """Everything both runs check before Ray starts: model, methods, target, preprocessing, the shards and
    the output folder. Returns (job, model bytes, shards or None, description, output folder, items per
    shard)."""
    from onnxplain.evaluation import runner as E
    from onnxplain.io import preprocess
    from onnxplain.runtime.explainer import Explainer

    require_ray()
    proto, data, digest = _model(model)
    names, per_method = _methods(methods, options, settings)
    ex = Explainer(proto, **explainer_kw)
    if target not in (None, "predicted", "label"):
        if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
            raise OnnxplainError(f"target must be a class index, 'label' or 'predicted', not {target!r}")
        ex.check_target(int(target), 1)
        target = int(target)
    recipe = preprocess.resolve(preset, mean=mean, std=std, layout=layout, size=size)
    try:
        recipe = preprocess.for_model(recipe, ex.x.shape)
    except OnnxplainError:
        recipe = None  # not an image input: model-ready arrays only
    lay = recipe.layout if recipe is not None else E.layout_of(ex, layout)
    ray_source = is_ray_dataset(source)
    if ray_source:
        names_in = source.schema().names if source.schema() is not None else []
        if "image" not in names_in:
            raise OnnxplainError(f"the ray.data.Dataset needs an 'image' column (it has: {', '.join(names_in)})")
        shards, what, inputs = None, "a ray.data.Dataset", []
        shard_size = shard_size or sources.default_shard_size(_item_values(ex, recipe))
    else:
        chosen = {}

        def auto(total: int) -> int:
            chosen["size"] = sources.default_shard_size(_item_values(ex, recipe), total)
            return chosen["size"]

        shards, what = sources.plan(source, shard_size or auto)
        shard_size = shard_size or chosen["size"]
        inputs = [Path(s) for s in ([source] if isinstance(source, (str, Path)) else source)]
    inputs += [Path(model)] if isinstance(model, (str, Path)) else []
    job = Job(
        kind=kind,
        output=str(output),
        methods=names,
        settings=per_method,
        target=target,
        batch_size=batch_size,
        recipe=recipe,
        explainer=dict(explainer_kw),
        layout=lay,
        threads=threads,
        gpus=gpus_per_actor,
        providers=providers,
        **extra,
    )
    config = {
        "kind": kind,
        "model": digest,
        "methods": names,
        "settings": _plain(per_method),
        "target": target,
        "preprocess": None if recipe is None else _plain(recipe.__dict__),
        "explainer": _plain(explainer_kw),
        "shard_size": shard_size,
        "source": what if ray_source else [str(p) for p in inputs[:-1] or inputs],
        **{k: _plain(v) for k, v in extra.items() if k == "metrics"},
        **({"evaluation": _plain(extra["evaluation"].__dict__)} if extra.get("evaluation") else {}),
    }
    out = store.prepare(output, config, inputs, resume=resume)
    job.output = str(out.resolve())
    return job, data, shards, what, out, shard_size


def _item_values(ex, recipe) -> int | None:
    """Input values per item: the model input's shape without its batch axis, or the preprocessing's
    image size; None when neither says."""
    dims = list(ex.x.shape or [])[1:]
    if dims and all(isinstance(d, int) and d > 0 for d in dims):
        return int(np.prod(dims))
    size = getattr(recipe, "size", None)
    if size:
        return 3 * int(np.prod(size))
    return None


def _plain(v):
    return json.loads(json.dumps(v, default=lambda o: list(o) if isinstance(o, (tuple, np.ndarray)) else str(o)))


def threads_per_actor(ray, threads: int | None, actors: int, cpus_per_actor: float = 1) -> int:
    """``threads`` when given (0: onnxruntime's choice); else the cores of a node shared among the actors
    placed on it: ``max(1, cpus_per_node // actors_per_node)``, with ``cpus_per_node`` the smallest CPU
    count of the cluster's nodes and the actors spread evenly over the nodes that have CPUs, and never
    fewer than the actor's own ``cpus_per_actor``. One actor on a 2-core machine gets 2 threads (never
    slower than a plain loop), two actors 1 each (no oversubscription)."""
    if threads is not None:
        return int(threads)
    cpus = [n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive", True)]
    cpus = [c for c in cpus if c > 0] or [ray.cluster_resources().get("CPU", 1)]
    per_node = -(-max(int(actors), 1) // len(cpus))  # ceil
    return max(1, int(cpus_per_actor), int(min(cpus) // per_node))


def _pool(ray, actors, cpus_per_actor, gpus_per_actor) -> int:
    if actors:
        return int(actors)
    res = ray.cluster_resources()
    if gpus_per_actor:
        return max(1, int(res.get("GPU", 0) // gpus_per_actor))
    return max(1, int(res.get("CPU", 1) // max(cpus_per_actor, 1e-9)))


def _stream(
    ray,
    job: Job,
    model_ref,
    shards,
    source,
    done_names,
    *,
    shard_size,
    actors,
    cpus_per_actor,
    gpus_per_actor,
    progress,
    sub: str,
):
    """Run the Worker pool over what is left to do; returns (items, errors, shards, actor seconds, intra-op
    threads of the actors' sessions) of this run."""
    import ray.data as rd

    ctx = rd.DataContext.get_current()
    bars = ctx.enable_progress_bars
    ctx.enable_progress_bars = progress is None and bool(os.environ.get("ONNXPLAIN_RAY_PROGRESS"))
    try:
        return _execute(
            ray,
            rd,
            job,
            model_ref,
            shards,
            source,
            done_names,
            shard_size=shard_size,
            actors=actors,
            cpus_per_actor=cpus_per_actor,
            gpus_per_actor=gpus_per_actor,
            progress=progress,
            sub=sub,
        )
    finally:
        ctx.enable_progress_bars = bars


def _execute(
    ray,
    rd,
    job,
    model_ref,
    shards,
    source,
    done_names,
    *,
    shard_size,
    actors,
    cpus_per_actor,
    gpus_per_actor,
    progress,
    sub,
):
    size = _pool(ray, actors, cpus_per_actor, gpus_per_actor)
    if shards is not None:
        todo = [s for s in shards if s.name not in done_names]
        total = sum(len(s.paths) if s.kind == "images" else s.stop - s.start for s in todo)
        if not todo:
            return 0, 0, 0, 0.0, None
        size = min(size, len(todo))
    job = replace(job, threads=threads_per_actor(ray, job.threads, size, cpus_per_actor))
    # the model travels inside a list: the actor fetches it from the object store itself (a top-level
    # reference would be pinned as a constructor dependency, which Ray warns about for restartable actors)
    common = dict(fn_constructor_args=([model_ref], job), num_cpus=cpus_per_actor, batch_format="numpy")
    if gpus_per_actor:
        common["num_gpus"] = gpus_per_actor
    if shards is not None:
        ds = rd.from_items([s.to_row() for s in todo], override_num_blocks=len(todo))
        ds = ds.map_batches(Worker, batch_size=1, compute=rd.ActorPoolStrategy(size=size), **common)
    else:
        done_ids = _done_ids(job, sub)
        ds = source
        if done_ids:
            ds = ds.map_batches(_skip, fn_args=(done_ids,), batch_format="numpy")
        total = None
        ds = ds.map_batches(Worker, batch_size=shard_size, compute=rd.ActorPoolStrategy(size=size), **common)
    n = errors = parts = 0
    busy = 0.0
    threads = set()
    t0 = time.perf_counter()
    for row in ds.iter_rows():
        n += int(row["items"])
        errors += int(row["errors"])
        busy += float(row["seconds"])
        threads.add(int(row["threads"]))
        parts += 1
        if progress is not None:
            progress(n, total, errors, n / max(time.perf_counter() - t0, 1e-9))
    return n, errors, parts, busy, max(threads) if threads else None


def _skip(batch: dict, done: set) -> dict:
    """Drops the rows whose id a resumed run already has (``ray.data.Dataset`` sources)."""
    rows = rows_of(batch)
    keep = np.array([r["id"] not in done for r in rows], dtype=bool)
    out = {k: v[keep] for k, v in batch.items()}
    if "id" not in batch:
        out["id"] = np.array([r["id"] for r in rows], dtype=object)[keep]
    return out


def _done_ids(job: Job, sub: str) -> set:
    import pyarrow.parquet as pq

    out = Path(job.output)
    ids = set()
    if sub == "maps":
        for f in (out / "maps").glob("*.parquet"):
            ids.update(pq.read_table(f, columns=["id"]).column("id").to_pylist())
    else:
        for f in (out / "eval").glob("*.npz"):
            ids.update(str(i) for i in store.load_npz(f)["ids"])
    ids.update(r["id"] for r in store.read_errors(out))
    return ids


def _finish(out: Path, summary: dict) -> dict:
    errors = store.read_errors(out)
    store.write_errors_csv(out, errors)
    summary["errors_total"] = len({e["id"] for e in errors})
    store.save_text(json.dumps(summary, indent=1), out / "summary.json")
    return summary


# ---- the two runs ------------------------------------------------------------------------------------------
def explain_dataset(
    model,
    source,
    methods=("gradient",),
    target=None,
    output="explain_out",
    *,
    method_options: dict | None = None,
    shard_size: int | None = None,
    batch_size: int = 16,
    actors: int | None = None,
    cpus_per_actor: float = 1,
    gpus_per_actor: float = 0,
    threads: int | None = None,
    providers: list | None = None,
    preset: str = "raw01",
    size=None,
    mean=None,
    std=None,
    layout: str | None = None,
    input: str | None = None,
    model_output: str | None = None,
    probabilities: bool = False,
    class_axis: int | None = None,
    address: str | None = None,
    resume: bool = True,
    progress=None,
    settings: dict | None = None,
) -> dict:
    """Explain every item of ``source`` with ``methods``; attribution maps go to ``output/maps/*.parquet``.

    ``source``: a folder of images (recursive), Parquet/``.npz``/``.npy`` files (or a folder of them) with an
    ``image`` column, or a ``ray.data.Dataset`` (see :mod:`onnxplain.dataset.sources`). ``target``: None (the
    predicted class), ``"label"`` (the item's label) or a class index. ``method_options``: the methods' own
    keywords (``window=``, ``steps=``, ...). ``actors``: the pool size (default: every CPU, or every GPU with
    ``gpus_per_actor``). ``threads``: each actor's onnxruntime intra-op threads (0: onnxruntime's choice);
    by default a node's cores shared among its actors, ``max(1, cpus_per_node // actors)`` (see
    :func:`threads_per_actor`): one actor on a 2-core machine uses both cores, two use one each.
    ``address``: a Ray cluster (``ray://host:10001``; default ``RAY_ADDRESS``, else a local Ray). Shards
    already written are skipped (``resume``). ``progress(done, total, errors, images_per_s)`` is called as
    shards finish. Returns the summary written to ``output/summary.json``.
    """
    if address or os.environ.get("RAY_ADDRESS"):
        ray = init(address)
        if client_mode(ray):
            kw = {k: v for k, v in locals().items() if k not in ("model", "source", "ray")}
            return on_cluster(ray, explain_dataset, model, (source,), kw)
    explainer_kw = {
        k: v
        for k, v in dict(input=input, output=model_output, probabilities=probabilities, class_axis=class_axis).items()
        if v
    }
    job, data, shards, what, out, shard_size = _setup(
        model,
        source,
        "explain",
        methods,
        target,
        output,
        options=method_options,
        settings=settings,
        shard_size=shard_size,
        batch_size=batch_size,
        preset=preset,
        size=size,
        mean=mean,
        std=std,
        layout=layout,
        explainer_kw=explainer_kw,
        threads=threads,
        gpus_per_actor=gpus_per_actor,
        providers=providers,
        resume=resume,
        extra={},
    )
    ray = init(address)
    t0 = time.perf_counter()
    done_names = store.done(out, "maps", ".parquet")
    n, errors, parts, busy, threads_used = _stream(
        ray,
        job,
        ray.put(data),
        shards,
        source,
        done_names,
        shard_size=shard_size,
        actors=actors,
        cpus_per_actor=cpus_per_actor,
        gpus_per_actor=gpus_per_actor,
        progress=progress,
        sub="maps",
    )
    seconds = time.perf_counter() - t0
    skipped = len(done_names & {s.name for s in shards}) if shards is not None else None
    return _finish(
        out,
        {
            "source": what,
            "methods": job.methods,
            "items": n,
            "errors": errors,
            "shards": parts,
            "shards_skipped": skipped,
            "seconds": round(seconds, 3),
            "actor_seconds": round(busy, 3),
            "threads_per_actor": threads_used,
            "images_per_s": round(n / seconds, 3) if n else 0.0,
            "output": str(out),
        },
    )


def evaluate_dataset(
    model,
    source,
    methods=None,
    metrics=None,
    output="eval_out",
    *,
    settings=None,
    shuffled_model=None,
    target=None,
    shard_size: int | None = None,
    actors: int | None = None,
    cpus_per_actor: float = 1,
    gpus_per_actor: float = 0,
    threads: int | None = None,
    providers: list | None = None,
    preset: str = "raw01",
    size=None,
    mean=None,
    std=None,
    layout: str | None = None,
    address: str | None = None,
    resume: bool = True,
    progress=None,
):
    """:func:`onnxplain.evaluation.runner.evaluate` over a dataset, shard by shard on a Ray actor pool.

    The per-image metrics (faithfulness, localisation where there are masks, class sensitivity,
    max-sensitivity) are scored on every item; the model randomisation tests (cascading, independent,
    data randomisation) once, on the first ``settings.n_sanity`` items. The method x metric table is
    written to ``output`` exactly as ``onnxplain evaluate`` writes it (CSV, JSON, Markdown, plots).
    ``target``: None (the labels where there are, else the predicted class) or "predicted".
    Returns the :class:`~onnxplain.evaluation.runner.Evaluation`; its ``ids`` attribute orders the per-image values.
    """
    from onnxplain.evaluation import runner as E

    if address or os.environ.get("RAY_ADDRESS"):
        ray = init(address)
        if client_mode(ray):
            kw = {k: v for k, v in locals().items() if k not in ("model", "source", "ray", "E")}
            if kw.get("shuffled_model") is not None:
                from onnxplain.graph.load import load_model

                kw["shuffled_model"] = load_model(kw["shuffled_model"])
            return on_cluster(ray, evaluate_dataset, model, (source,), kw)
    s = settings or E.Settings()
    names = list(E.DEFAULT_METHODS) if methods is None else methods
    wanted = None if metrics is None else E.resolve(metrics, E.METRICS, "metric")
    if wanted and "data_randomisation" in wanted and shuffled_model is None:
        raise OnnxplainError("data_randomisation needs a model trained on shuffled labels (shuffled_model=)")
    job, data, shards, what, out, shard_size = _setup(
        model,
        source,
        "evaluate",
        names,
        None if target is None else target,
        output,
        options=None,
        settings=None,
        shard_size=shard_size,
        batch_size=s.batch_size,
        preset=preset,
        size=size,
        mean=mean,
        std=std,
        layout=layout,
        explainer_kw={},
        threads=threads,
        gpus_per_actor=gpus_per_actor,
        providers=providers,
        resume=resume,
        extra={"metrics": wanted, "evaluation": s},
    )
    shuffled = None if shuffled_model is None else _model(shuffled_model)[1]
    ray = init(address)
    done_names = store.done(out, "eval", ".npz")
    _stream(
        ray,
        job,
        ray.put(data),
        shards,
        source,
        done_names,
        shard_size=shard_size,
        actors=actors,
        cpus_per_actor=cpus_per_actor,
        gpus_per_actor=gpus_per_actor,
        progress=progress,
        sub="eval",
    )
    files = (
        [out / "eval" / f"{sh.name}.npz" for sh in shards]
        if shards is not None
        else sorted((out / "eval").glob("*.npz"))
    )
    ids, values, curves = store.merge_eval([store.unpack_eval(store.load_npz(f)) for f in files if f.exists()])
    if not ids:
        _finish(out, {"source": what, "items": 0})
        raise OnnxplainError(f"no item could be evaluated; see {out / 'errors.csv'}")
    sanity_metrics = [
        m
        for m in (
            wanted
            if wanted is not None
            else ["cascading", "independent"] + (["data_randomisation"] if shuffled else [])
        )
        if m in E.SANITY
    ]
    ev = E.Evaluation(methods=job.methods, metrics=[], n=len(ids), n_sanity=0, values=values, curves=curves)
    if sanity_metrics:
        rows, shard = _first_rows(source, shards, s.n_sanity)
        remote = ray.remote(num_cpus=cpus_per_actor, num_gpus=gpus_per_actor or None)(_sanity)
        alone = replace(job, threads=threads_per_actor(ray, job.threads, 1, cpus_per_actor))  # one task, after the pool
        res = ray.get(
            remote.remote(
                ray.put(data), alone, shard, rows, None if shuffled is None else ray.put(shuffled), sanity_metrics
            )
        )
        if res is not None:
            ev.sanity, ev.cascade_maps, ev.layers, ev.image = (
                res["sanity"],
                res["cascade_maps"],
                res["layers"],
                res["image"],
            )
            ev.n_sanity = res["n"]
            ev.values.update(res["values"])
    present = {c.metric for c in E.COLUMNS if c.key in ev.values and c.metric}
    ev.metrics = [m for m in E.METRICS if m in present]
    ev.ids = ids
    E.write(ev, out)
    _finish(
        out,
        {
            "source": what,
            "methods": job.methods,
            "metrics": ev.metrics,
            "items": len(ids),
            "n_sanity": ev.n_sanity,
            "output": str(out),
        },
    )
    return ev


def _first_rows(source, shards, k: int):
    """The first ``k`` items, for the randomisation tests: (rows, None) of a ray Dataset, else (None, shard)."""
    if shards is None:
        return rows_of(source.take_batch(k, batch_format="numpy")), None
    first = shards[0]
    if first.kind == "images":
        return None, replace(first, paths=first.paths[:k])
    return None, replace(first, stop=min(first.stop, first.start + k))


def _sanity(model, job, shard, rows, shuffled, metrics):
    if shard is not None:
        from onnxplain.dataset.worker import build_explainer

        ex = build_explainer(model, job)
        items = sources.read_shard(shard, job.recipe, ex.x.shape)
        rows = (
            [
                {"id": i, "image": a, **({"label": items.labels[j]} if items.labels is not None else {})}
                for j, (i, a) in enumerate(zip(items.ids, items.images))
            ]
            if items.images is not None
            else []
        )
    if not rows:
        return None
    return sanity_task(model, job, rows, shuffled, metrics)
