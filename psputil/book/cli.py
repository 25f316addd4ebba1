"""``python -m psputil reproduce``: execute the book's notebooks with papermill, then build the HTML.

The notebooks to run are the ``.ipynb`` pages of ``_toc.yml``, in its order (the
single list: add a page to the toc and ``reproduce`` runs it). Each is executed with
the parameters of ``book/params/<profile>.yaml`` (one file per profile, every
parameter once; each notebook receives its own, ``params.NOTEBOOKS``) into an executed
copy under ``_build/<profile>/executed/``: a mirror of ``book/`` (symbolic links) whose
notebooks carry their outputs and ``mystnb.execution_mode: off``, so the build shows
them as run, with the parameters cells tagged ``remove-cell``. Jupyter Book then builds
that mirror into ``_build/<profile>/html``: every profile keeps its own executed
notebooks and HTML (a plain ``jupyter-book build book`` writes ``_build/html``).

Every parameter file and flag is checked against ``psputil.book.params`` before the
first kernel starts. Each notebook's line names the papermill command that runs it
exactly so; ``python -m psputil papermill-command --profile smoke section5_2`` prints
that command for one notebook.

While a notebook runs, its kernel writes progress records to a file
($PSPUTIL_PROGRESS, ``psputil.scale.progress``) and this command prints them, one line
per update (``[2/6] section5_1 | LOBSTER lenet300/mnist-5k seed 0: 120/600 epochs, 14 s,
ETA 56 s``), on the terminal and never into the saved notebooks (kernels get
``TQDM_DISABLE=1``). Kernels talk over local sockets (ipc transport) and are not sent
an interrupt when they are shut down after their last cell, so the terminal shows no
kernel warnings (``psputil.book.execution``).

``--executor`` (in-process, process-pool, ray), ``--workers`` and ``--ray-address`` reach
every notebook as the papermill parameters ``executor``, ``workers`` and ``ray_address``
(a flag not given: the profile file's value, ``where_to_run``; quick runs on a process
pool) and are recorded in each executed notebook's metadata (``psputil``). ``--executor
ray`` without an address starts one local Ray instance for the whole run, which every
notebook's kernel joins (its address is what they receive).
"""

import argparse
import contextlib
import importlib.util
import shlex
import time
from pathlib import Path

from psputil import checks, paths
from psputil.book import execution
from psputil.book import params as schema
from psputil.book.jupyterbook import TOC, build, mirror
from psputil.book.params import PROFILES
from psputil.scale.executors import EXECUTOR_NAMES, check_address

BOOK = paths.REPO_ROOT / "book"
BUILD = paths.REPO_ROOT / "_build"
KERNEL = "python3"


def executed_dir(profile):
    """Where ``reproduce`` keeps the executed notebooks of `profile`: ``_build/<profile>/executed``."""
    return BUILD / checks.choice("profile", profile, PROFILES) / "executed"


def html_dir(profile):
    """Where ``reproduce`` builds the HTML of `profile`: ``_build/<profile>/html``."""
    return BUILD / checks.choice("profile", profile, PROFILES) / "html"


def toc_notebooks(toc=TOC, book=BOOK):
    """Names (paths relative to book/, no suffix) of the toc's notebooks, in toc order."""
    import yaml

    found = []

    def walk(entry):
        if isinstance(entry, dict):
            for key in ("root", "file"):
                name = entry.get(key)
                if isinstance(name, str) and (Path(book) / name).with_suffix(".ipynb").is_file():
                    if "/" in name:
                        raise ValueError(f"toc notebook {name!r}: section notebooks must sit directly in book/")
                    found.append(str(Path(name).with_suffix("")))
            for value in entry.values():
                if isinstance(value, (list, dict)):
                    walk(value)
        elif isinstance(entry, list):
            for item in entry:
                walk(item)

    walk(yaml.safe_load(Path(toc).read_text()))
    return found


def parameters(profile, notebook=None, params=BOOK / "params"):
    """Papermill parameters of a profile from ``<profile>.yaml``: a notebook's own ones, or every one (None).

    The whole file is checked (every key a parameter of some notebook, every value valid),
    whichever notebook asks.

    Raises:
        ValueError: an unknown profile, a missing file, a file that is not a YAML mapping, an
            unknown key or a bad value; the message names the file.
    """
    import yaml

    checks.choice("profile", profile, PROFILES)
    path = parameter_file(profile, params)
    if not path.is_file():
        raise ValueError(f"{_shown(path)}: no such parameter file (one per profile: "
                         f"{', '.join(f'{p}.yaml' for p in PROFILES)} in {_shown(path.parent)})")
    loaded = yaml.safe_load(path.read_text())
    if loaded is not None and not isinstance(loaded, dict):
        raise ValueError(f"{_shown(path)}: a parameter file must be a YAML mapping (name: value), got "
                         f"{type(loaded).__name__}")
    loaded = loaded or {}
    try:
        schema.check(loaded, None, namespace=False)
    except ValueError as error:
        raise ValueError(f"{_shown(path)}: {error}") from None
    if notebook is None or notebook not in schema.NOTEBOOKS:
        return dict(loaded)
    return {name: loaded[name] for name in schema.NOTEBOOKS[notebook] if name in loaded}


def parameter_file(profile, params=BOOK / "params"):
    """The ``-f`` file papermill takes for every notebook of `profile`: ``<params>/<profile>.yaml``."""
    return Path(params) / f"{checks.choice('profile', profile, PROFILES)}.yaml"


def where_to_run(profile, executor=None, workers=None, ray_address=None, book=BOOK):
    """(executor, workers, ray_address): the flags, those not given (None) from the profile file.

    The file's `workers` and `ray_address` apply only with the file's executor: ``--executor
    process-pool`` on a file that names a Ray cluster does not inherit its address.
    """
    from_file = parameters(profile, None, Path(book) / "params")
    file_executor = from_file.get("executor", "in-process")
    if executor is not None and executor != file_executor:
        return executor, workers, ray_address
    return (file_executor, workers if workers is not None else from_file.get("workers"),
            ray_address if ray_address is not None else from_file.get("ray_address"))


def run_values(notebook, profile, device=None, download=False, executor=None, workers=None,
               ray_address=None, book=BOOK):
    """The parameters a notebook runs with: its own from the profile file, then the flags; checked.

    Returns:
        (the notebook's values, the overrides: the flags' values).

    Raises:
        ValueError: a bad file, flag or value (see ``parameters`` and ``params.check``).
    """
    executor, workers, ray_address = where_to_run(profile, executor, workers, ray_address, book)
    overrides = {"executor": executor, "workers": workers, "ray_address": ray_address}
    if device is not None:
        overrides["device"] = device
    if checks.flag("download", download):
        overrides["download"] = True
    values = {**parameters(profile, notebook, Path(book) / "params"), **overrides}
    schema.check(values, notebook if notebook in schema.NOTEBOOKS else None, namespace=False)
    return values, overrides


def papermill_command(notebook, profile, output, device=None, download=False, executor=None, workers=None,
                      ray_address=None, book=BOOK):
    """The shell command that runs `notebook` as ``execute`` does (same parameters, kernel, cwd).

    It passes the whole profile file with ``-f`` (the notebook takes its own parameters and
    ignores the others'); `device` and `download` whenever given; executor, workers and
    ray_address when they differ from the file's values. Options are ``-p``, ``-r`` (text
    papermill's ``-p`` would read as a number, a bool or None) or ``-y`` (lists).

    Returns:
        The command line, paths relative to the current folder where possible.
    """
    _, overrides = run_values(notebook, profile, device, download, executor, workers, ray_address, book)
    from_file = parameters(profile, None, Path(book) / "params")
    source = (Path(book) / notebook).with_suffix(".ipynb")
    words = ["papermill", _shown(source), _shown(output), "-f", _shown(parameter_file(profile, Path(book) / "params"))]
    words += ["-k", KERNEL, "--cwd", _shown(source.parent)]
    for name, value in overrides.items():  # --device and --download always show; the rest when the file differs
        if name in ("device", "download") or name not in from_file or from_file[name] != value:
            words += _papermill_option(name, value)
    return "TQDM_DISABLE=1 " + shlex.join(words)


def execute(notebook, profile, device=None, book=BOOK, executed=None, executor=None, workers=None,
            ray_address=None, download=False, progress=None):
    """Run one notebook with papermill into ``executed/<notebook>.ipynb``; returns that path.

    `executed` defaults to ``_build/<profile>/executed``. The notebook receives its own
    parameters (``run_values``); `executor`, `workers` and `ray_address` (None: the profile file's
    value) are recorded in the executed notebook's ``psputil`` metadata. The parameters are checked before the kernel
    starts. Its parameters cell and papermill's injected-parameters cell are tagged
    ``remove-cell`` (the build leaves them out; the page's "About this run" lists the values).

    Args:
        progress: called with each progress record (a dict, ``psputil.scale.progress``) the
            kernel writes while it runs; None: nobody listens.
    """
    import nbformat
    import papermill

    values, overrides = run_values(notebook, profile, device, download, executor, workers, ray_address, book)
    source = (Path(book) / notebook).with_suffix(".ipynb")
    if notebook not in schema.NOTEBOOKS:  # e.g. a test notebook: only what its parameters cell defines
        defined = execution.parameters_cell_names(source)
        values = {name: value for name, value in values.items() if name in defined}
    target = (Path(executed or executed_dir(profile)) / notebook).with_suffix(".ipynb")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink():
        target.unlink()
    with execution.kernel_environment(progress):
        papermill.execute_notebook(
            str(source), str(target), parameters=values, cwd=str(source.parent), kernel_name=KERNEL,
            progress_bar=False, log_output=False, kernel_manager_class=execution.QuietKernelManager,
        )
    executed_nb = nbformat.read(target, as_version=4)
    executed_nb.metadata["mystnb"] = {"execution_mode": "off"}  # the build shows these outputs as they are
    executed_nb.metadata.setdefault("psputil", {}).update(
        profile=profile, **{name: overrides[name] for name in ("executor", "workers", "ray_address")})
    execution.hide_parameters(executed_nb)
    nbformat.write(executed_nb, target)
    return target


def prepare(profile, device=None, notebooks=None, executor=None, workers=None, ray_address=None,
            download=False):
    """Check every argument and every chosen notebook's parameters; returns the notebooks to run.

    Raises:
        ValueError: an unknown profile, device, executor or notebook (only toc notebooks: a name
            never becomes a path outside the book), bad workers or address, or a bad parameter file.
    """
    checks.choice("profile", profile, PROFILES)
    if device is not None:
        schema.check_device("device", device)
    if executor is not None:
        checks.choice("executor", executor, EXECUTOR_NAMES)
    checks.integer("workers", workers, low=1, optional=True)
    executor, workers, ray_address = where_to_run(profile, executor, workers, ray_address)
    if check_address(ray_address) is not None and executor != "ray":
        raise ValueError("a Ray address needs the ray executor (--executor ray)")
    listed = toc_notebooks()
    chosen = listed if notebooks is None else list(checks.names("notebooks", notebooks))
    unknown = [name for name in chosen if name not in listed]
    if unknown:
        raise ValueError(f"unknown notebook(s) {', '.join(unknown)}; the toc's notebooks: {', '.join(listed) or 'none'}")
    for name in chosen:
        schema.parameters_of(name)  # a toc notebook without a schema entry is refused here
        run_values(name, profile, device, download, executor, workers, ray_address)
    return chosen


def _say(line):
    """Print one line now (progress lines come from a helper thread, possibly into a pipe)."""
    print(line, flush=True)


def reproduce(profile, device=None, notebooks=None, strict=False, build_html=True, out=_say,
              executor=None, workers=None, ray_address=None, download=False, progress_every=5.0):
    """Execute the toc's notebooks (or the named ones) for `profile`, then build; returns an exit code.

    Everything is checked first (``prepare``); executed notebooks go to ``_build/<profile>/executed``
    and the HTML to ``_build/<profile>/html``.

    Args:
        executor, workers, ray_address: where the notebooks' sweeps run (see ``psputil.scale.executors``;
            None: the profile file's value); "ray" without an address starts one local Ray instance for all
            notebooks.
        download: pass ``download=True`` to every notebook (torchvision downloads missing data).
        out: called with every line to show (default: printed and flushed): the command of each notebook, its progress
            ("[2/6] section5_1 | LOBSTER ...: 120/600 epochs, 14 s, ETA 56 s"), its wall time.
        progress_every: seconds between two progress lines of one task (first and last always shown).

    Raises:
        ValueError: see ``prepare`` (raised before any kernel starts).
    """
    chosen = prepare(profile, device, notebooks, executor, workers, ray_address, download)
    executor, workers, ray_address = where_to_run(profile, executor, workers, ray_address)
    listed, folder = toc_notebooks(), executed_dir(profile)
    started = time.perf_counter()
    out(f"reproduce: profile {profile}, device {device or 'from the profile'}, executor {executor}"
        f"{f' ({workers} workers)' if workers else ''}{f' at {ray_address}' if ray_address else ''}, "
        f"{len(chosen)} notebook(s) into {_shown(folder)}")
    with _shared_ray(executor, workers, ray_address, out) as address:
        for i, name in enumerate(chosen, 1):
            target = (folder / name).with_suffix(".ipynb")
            command = papermill_command(name, profile, target, device, download, executor, workers, address)
            out(f"[{i}/{len(chosen)}] {name}: {command}")
            tick = time.perf_counter()
            printer = execution.ProgressPrinter(out, prefix=f"[{i}/{len(chosen)}] {name} | ", every=progress_every)
            try:
                execute(name, profile, device, executor=executor, workers=workers, ray_address=address,
                        download=download, progress=printer)
            except Exception as error:  # papermill saved the failing notebook: say where, stop
                out(f"[{i}/{len(chosen)}] {name}: FAILED ({type(error).__name__}); see {_shown(target)}")
                out(str(error)[-2000:])
                return 1
            out(f"[{i}/{len(chosen)}] {name}: done in {time.perf_counter() - tick:.1f} s "
                f"(total {time.perf_counter() - started:.1f} s)")
    mirror(BOOK, folder)
    for name in listed:
        copy = (folder / name).with_suffix(".ipynb")
        if copy.is_symlink():
            out(f"{name}: never executed by reproduce --profile {profile}; the build runs it with its defaults")
    if not build_html:
        out(f"executed notebooks: {_shown(folder)}")
        return 0
    out(f"building the HTML of profile {profile} with jupyter-book into {_shown(html_dir(profile))} ...")
    code = build(folder, strict=strict, html=html_dir(profile))
    if code == 0:
        out(f"done in {time.perf_counter() - started:.1f} s; the book: {html_dir(profile) / 'index.html'}")
    return code


@contextlib.contextmanager
def _shared_ray(executor, workers, address, out):
    """For "ray" without an address: one local Ray instance for the whole run; yields its address."""
    if executor != "ray" or address:
        yield address
        return
    from psputil.scale.executors import RayExecutor

    with RayExecutor(workers=workers) as ray_executor:
        out(f"started a local Ray instance at {ray_executor.address} ({ray_executor.workers} CPUs, "
            f"{ray_executor.gpus:g} GPUs); the notebooks join it")
        yield ray_executor.address


def _papermill_option(name, value):
    """Papermill's option that passes `value` unchanged (its -p reads "12", "True", "None" as such)."""
    import yaml

    if value is None or isinstance(value, (bool, int, float)):
        return ["-p", name, str(value)]
    if isinstance(value, str):
        return ["-r" if _resolves(value) else "-p", name, value]
    return ["-y", yaml.safe_dump({name: value}, default_flow_style=True).strip()]


def _resolves(text):
    """Whether papermill's -p would turn `text` into something other than that string."""
    if text in ("True", "False", "None"):
        return True
    try:
        float(text)
        return True
    except ValueError:
        return False


def _shown(path):
    """`path` relative to the current folder when it lies below it, else absolute."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _arguments(parser):
    """The flags ``reproduce`` and ``papermill-command`` share."""
    parser.add_argument("--profile", choices=PROFILES, default="quick", help="parameter set (default: quick)")
    parser.add_argument("--device", default=None,
                        help="auto, cpu, or a CUDA device of this machine (cuda, cuda:N); default: the profile's value")
    parser.add_argument("--download", action="store_true",
                        help="let torchvision download missing data sets (papermill -p download True)")
    parser.add_argument("--executor", choices=EXECUTOR_NAMES, default=None,
                        help="where the sweeps of independent runs go (default: the profile's value; quick: "
                             "process-pool)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="process-pool size or CPUs of a local Ray instance (default: the profile's value; "
                             "none there: all cores)")
    parser.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="join this Ray cluster (host:6379 or ray://host:10001) instead of starting a local one")


def main(argv=None):
    """Command-line entry point (``python -m psputil``)."""
    parser = argparse.ArgumentParser(prog="python -m psputil", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("reproduce", help="execute the book's notebooks with papermill and build the HTML")
    _arguments(run)
    run.add_argument("--notebooks", nargs="+", metavar="NAME", help="only these toc notebooks (default: all, in toc order)")
    run.add_argument("--strict", action="store_true", help="treat build warnings as errors (jupyter-book -W)")
    run.add_argument("--no-build", action="store_true", help="execute only, do not build the HTML")
    show = commands.add_parser("papermill-command", help="print the papermill command that runs one notebook "
                               "as reproduce does")
    _arguments(show)
    show.add_argument("--output", default=None, metavar="PATH",
                      help="the executed notebook papermill writes (default: <notebook>-<profile>.ipynb)")
    show.add_argument("notebook", help="a toc notebook, e.g. section5_2")
    args = parser.parse_args(argv)
    sub = run if args.command == "reproduce" else show
    if args.workers is not None and args.workers < 1:
        sub.error(f"--workers must be a positive number of workers, got {args.workers}")
    try:
        executor = where_to_run(args.profile, args.executor)[0]
    except ValueError as error:  # a bad parameter file
        sub.error(str(error))
    if args.ray_address and executor != "ray":
        sub.error("--ray-address needs --executor ray")
    if executor == "ray" and args.command == "reproduce" and importlib.util.find_spec("ray") is None:
        sub.error("--executor ray needs ray: pip install -r requirements-ray.txt (or pip install -e .[ray])")
    notebooks = getattr(args, "notebooks", None) or ([args.notebook] if args.command == "papermill-command" else None)
    try:
        prepare(args.profile, args.device, notebooks, args.executor, args.workers, args.ray_address, args.download)
    except ValueError as error:
        sub.error(str(error))
    if args.command == "papermill-command":
        output = args.output or f"{args.notebook}-{args.profile}.ipynb"
        print(papermill_command(args.notebook, args.profile, output, args.device, args.download, args.executor,
                                args.workers, args.ray_address))
        return 0
    return reproduce(args.profile, args.device, args.notebooks, strict=args.strict, build_html=not args.no_build,
                     executor=args.executor, workers=args.workers, ray_address=args.ray_address,
                     download=args.download)
