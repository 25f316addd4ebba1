"""``python -m psputil reproduce``: execute the book's notebooks with papermill, then build the HTML.

The notebooks to run are the ``.ipynb`` pages of ``_toc.yml``, in its order (the
single list: add a section to the toc and ``reproduce`` runs it). Each is executed
with the parameters of ``book/params/<profile>.yaml`` (shared keys) updated by
``book/params/<profile>/<notebook>.yaml`` when present, into an executed copy under
``_build/executed/``: a mirror of ``book/`` (symbolic links) whose notebooks carry
their outputs and ``mystnb.execution_mode: off``, so the build shows them as run.
Jupyter Book then builds that mirror into ``_build/html`` (the same place a plain
``jupyter-book build book`` writes to). Kernels get ``TQDM_DISABLE=1``.

``--executor`` (in-process, process-pool, ray), ``--workers`` and ``--ray-address`` reach
every notebook as the papermill parameters ``executor``, ``workers`` and ``ray_address``
and are recorded in each executed notebook's metadata (``psputil``). ``--executor ray``
without an address starts one local Ray instance for the whole run, which every
notebook's kernel joins (its address is what they receive).
"""

import argparse
import contextlib
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

from psputil import paths
from psputil.book.pages import PROFILES
from psputil.scale.executors import EXECUTOR_NAMES

BOOK = paths.REPO_ROOT / "book"
CONFIG = paths.REPO_ROOT / "_config.yml"
TOC = paths.REPO_ROOT / "_toc.yml"
EXECUTED = paths.REPO_ROOT / "_build" / "executed"
HTML = paths.REPO_ROOT / "_build" / "html"


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
    """Papermill parameters of a profile: ``<profile>.yaml`` updated by ``<profile>/<notebook>.yaml``."""
    import yaml

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    values = {}
    for path in parameter_files(profile, notebook, params):
        values.update(yaml.safe_load(path.read_text()) or {})
    return values


def parameter_files(profile, notebook, params=BOOK / "params"):
    """The ``-f`` files papermill takes for this notebook and profile, in order."""
    files = [Path(params) / f"{profile}.yaml"]
    specific = Path(params) / profile / f"{notebook}.yaml"
    return files + ([specific] if specific.is_file() else [])


def execute(notebook, profile, device=None, book=BOOK, executed=EXECUTED, executor="in-process", workers=None,
            ray_address=None):
    """Run one notebook with papermill into ``executed/<notebook>.ipynb``; returns that path.

    `executor`, `workers` and `ray_address` are passed as papermill parameters of those
    names and recorded in the executed notebook's ``psputil`` metadata.
    """
    import nbformat
    import papermill

    values = parameters(profile, notebook, Path(book) / "params")
    if device is not None:
        values["device"] = device
    values.update(executor=executor, workers=workers, ray_address=ray_address)
    source = (Path(book) / notebook).with_suffix(".ipynb")
    target = (Path(executed) / notebook).with_suffix(".ipynb")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink():
        target.unlink()
    os.environ["TQDM_DISABLE"] = "1"  # inherited by the kernel: no tqdm widgets in saved notebooks
    papermill.execute_notebook(
        str(source), str(target), parameters=values, cwd=str(source.parent),
        kernel_name="python3", progress_bar=False, log_output=False,
    )
    executed_nb = nbformat.read(target, as_version=4)
    executed_nb.metadata["mystnb"] = {"execution_mode": "off"}  # the build shows these outputs as they are
    executed_nb.metadata.setdefault("psputil", {}).update(
        profile=profile, executor=executor, workers=workers, ray_address=ray_address)
    nbformat.write(executed_nb, target)
    return target


def mirror(book=BOOK, executed=EXECUTED):
    """Link every entry of book/ into `executed`, keeping the executed notebooks already there."""
    executed = Path(executed)
    executed.mkdir(parents=True, exist_ok=True)
    for link in executed.iterdir():
        if link.is_symlink() and not link.exists():  # its source left book/
            link.unlink()
    for entry in Path(book).iterdir():
        link = executed / entry.name
        if entry.name in ("_build", ".ipynb_checkpoints") or (link.is_file() and not link.is_symlink()):
            continue
        if link.is_symlink():
            link.unlink()
        link.symlink_to(entry.resolve(), target_is_directory=entry.is_dir())


def build(source, strict=False, config=CONFIG, toc=TOC, quiet=False):
    """Run ``jupyter-book build`` on `source` with `config` and `toc`; returns the exit code.

    The HTML lands in ``_build/html`` beside the config file.
    """
    command = [
        sys.executable, "-c", "from jupyter_book.cli.main import main; main()",
        "build", str(source), "--config", str(config), "--toc", str(toc), "--path-output", str(Path(config).parent),
    ]
    if strict:
        command.append("-W")
    output = subprocess.DEVNULL if quiet else None
    return subprocess.run(command, cwd=Path(config).parent, stdout=output).returncode


def reproduce(profile, device=None, notebooks=None, strict=False, build_html=True, out=print,
              executor="in-process", workers=None, ray_address=None):
    """Execute the toc's notebooks (or the named ones) for `profile`, then build; returns an exit code.

    Args:
        executor, workers, ray_address: where the notebooks' sweeps run (see ``psputil.executors``);
            "ray" without an address starts one local Ray instance for all notebooks.
    """
    listed = toc_notebooks()
    chosen = listed if not notebooks else list(notebooks)
    started = time.perf_counter()
    out(f"reproduce: profile {profile}, device {device or 'from the profile'}, executor {executor}"
        f"{f' ({workers} workers)' if workers else ''}{f' at {ray_address}' if ray_address else ''}, "
        f"{len(chosen)} notebook(s)")
    with _shared_ray(executor, workers, ray_address, out) as address:
        for i, name in enumerate(chosen, 1):
            files = " ".join(f"-f {f.relative_to(paths.REPO_ROOT)}" for f in parameter_files(profile, name))
            flags = f" -p executor {executor}" + (f" -p workers {workers}" if workers else "") + \
                (f" -p ray_address {address}" if address else "")
            out(f"[{i}/{len(chosen)}] {name}: papermill book/{name}.ipynb _build/executed/{name}.ipynb {files}{flags}")
            tick = time.perf_counter()
            try:
                execute(name, profile, device, executor=executor, workers=workers, ray_address=address)
            except Exception as error:  # papermill saved the failing notebook: say where, stop
                out(f"[{i}/{len(chosen)}] {name}: FAILED ({type(error).__name__}); see _build/executed/{name}.ipynb")
                out(str(error)[-2000:])
                return 1
            out(f"[{i}/{len(chosen)}] {name}: done in {time.perf_counter() - tick:.1f} s "
                f"(total {time.perf_counter() - started:.1f} s)")
    mirror()
    for name in listed:
        copy = (EXECUTED / name).with_suffix(".ipynb")
        if copy.is_symlink():
            out(f"{name}: never executed by reproduce; the build runs it with its defaults")
        elif (other := _profile_of(copy)) != profile:
            out(f"{name}: showing an earlier run with profile {other}")
    if not build_html:
        return 0
    out("building the HTML with jupyter-book ...")
    code = build(EXECUTED, strict=strict)
    if code == 0:
        out(f"done in {time.perf_counter() - started:.1f} s; the book: {HTML / 'index.html'}")
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


def _profile_of(notebook):
    import nbformat

    return nbformat.read(notebook, as_version=4).metadata.get("psputil", {}).get("profile", "unknown")


def main(argv=None):
    """Command-line entry point (``python -m psputil``)."""
    parser = argparse.ArgumentParser(prog="python -m psputil", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("reproduce", help="execute the book's notebooks with papermill and build the HTML")
    run.add_argument("--profile", choices=PROFILES, default="quick", help="parameter set (default: quick)")
    run.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: the profile's value)")
    run.add_argument("--notebooks", nargs="+", metavar="NAME", help="only these toc notebooks (default: all, in toc order)")
    run.add_argument("--strict", action="store_true", help="treat build warnings as errors (jupyter-book -W)")
    run.add_argument("--no-build", action="store_true", help="execute only, do not build the HTML")
    run.add_argument("--executor", choices=EXECUTOR_NAMES, default="in-process",
                     help="where the sweeps of independent runs go (default: in-process)")
    run.add_argument("--workers", type=int, default=None, metavar="N",
                     help="process-pool size or CPUs of a local Ray instance (default: all cores)")
    run.add_argument("--ray-address", default=None, metavar="ADDR",
                     help="join this Ray cluster (host:6379 or ray://host:10001) instead of starting a local one")
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        run.error(f"--workers must be a positive number of workers, got {args.workers}")
    if args.ray_address and args.executor != "ray":
        run.error("--ray-address needs --executor ray")
    if args.executor == "ray" and importlib.util.find_spec("ray") is None:
        run.error("--executor ray needs ray: pip install -r requirements-ray.txt (or pip install -e .[ray])")
    if args.device is not None:
        from psputil import devices

        try:
            devices.resolve(args.device)
        except ValueError as error:
            run.error(str(error))
    listed = toc_notebooks()
    unknown = [n for n in args.notebooks or () if n not in listed]
    if unknown:
        run.error(f"unknown notebook(s) {', '.join(unknown)}; the toc's notebooks: {', '.join(listed) or 'none'}")
    return reproduce(args.profile, args.device, args.notebooks, strict=args.strict, build_html=not args.no_build,
                     executor=args.executor, workers=args.workers, ray_address=args.ray_address)
