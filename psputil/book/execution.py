"""Running one notebook's kernel for ``reproduce``: a quiet kernel, its progress on the terminal, hidden parameters.

* ``QuietKernelManager``: the kernel manager papermill starts kernels with. Two kernel
  messages used to reach the terminal: ipykernel warns "Kernel is running over TCP without
  encryption" at start (``IPKernelApp.init_sockets``) for the tcp transport, and
  jupyter_client's ``shutdown_kernel`` first *interrupts* the kernel, i.e. sends SIGINT
  to its whole process group (``LocalProvisioner.send_signal``), so the pool workers of a
  notebook print ``KeyboardInterrupt`` tracebacks, and ipykernel logs "KeyboardInterrupt
  caught in kernel" when the signal lands inside a message handler. This manager talks
  to the kernel over local sockets (ipc transport, which needs no encryption: the sockets
  are files only this user can open) and skips the interrupt when it shuts a kernel down
  (every cell has finished by then; the shutdown request follows as usual).
* ``kernel_environment``: the environment a kernel inherits while it runs: ``TQDM_DISABLE=1``
  (no tqdm widgets in saved notebooks) and ``PSPUTIL_PROGRESS``, a fresh file whose JSON
  lines (``psputil.scale.progress``) a thread follows and hands to a listener.
* ``ProgressPrinter``: a listener that prints ``progress.describe`` lines, at most one per
  task every few seconds (plus each task's first and last).
* ``hide_parameters``: tags the parameters and injected-parameters cells ``remove-cell``.
"""

import contextlib
import json
import logging
import os
import tempfile
import threading
import time

from jupyter_client.manager import AsyncKernelManager
from traitlets import CaselessStrEnum

from psputil.scale import progress as progress_lines

log = logging.getLogger(__name__)

PROGRESS_VARIABLE = "PSPUTIL_PROGRESS"  # read by psputil.scale.context.make in the kernel
HIDDEN = "remove-cell"  # Jupyter Book leaves such cells out of the page


class QuietKernelManager(AsyncKernelManager):
    """An ``AsyncKernelManager`` on the ipc transport that does not interrupt a kernel it shuts down."""

    transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

    async def _async_interrupt_kernel(self):
        if self.shutting_down:  # after the last cell: SIGINT would only reach the kernel's process group
            return
        await super()._async_interrupt_kernel()

    interrupt_kernel = _async_interrupt_kernel


@contextlib.contextmanager
def kernel_environment(listener=None, interval=0.5):
    """Environment for a kernel started inside the block: TQDM_DISABLE=1, and progress to `listener`.

    Args:
        listener: called (in a helper thread) with every progress record the kernel writes,
            as a dict; None leaves $PSPUTIL_PROGRESS as it is.
        interval: seconds between two reads of the progress file.

    The variables are restored and the progress file removed when the block ends; records
    written before the end are all delivered first.
    """
    saved = {name: os.environ.get(name) for name in ("TQDM_DISABLE", PROGRESS_VARIABLE)}
    os.environ["TQDM_DISABLE"] = "1"
    follower = None
    try:
        if listener is not None:
            handle, path = tempfile.mkstemp(prefix="psputil-progress-", suffix=".jsonl")
            os.close(handle)
            os.environ[PROGRESS_VARIABLE] = path
            follower = Follower(path, listener, interval)
            follower.start()
        yield
    finally:
        if follower is not None:
            follower.stop()
            with contextlib.suppress(OSError):
                os.unlink(follower.path)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Follower(threading.Thread):
    """Follows a file of JSON lines as it grows and hands each record to `listener` (``tail -f``)."""

    def __init__(self, path, listener, interval=0.5):
        super().__init__(name="psputil-progress", daemon=True)
        self.path, self.listener, self.interval = path, listener, interval
        self._stop_event = threading.Event()
        self._offset, self._partial = 0, b""

    def run(self):
        while not self._stop_event.wait(self.interval):
            self.drain()
        self.drain()

    def stop(self):
        """Deliver what is left and end the thread."""
        self._stop_event.set()
        self.join()

    def drain(self):
        """Hand every complete new line to the listener (bad JSON is skipped)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
                self._offset = f.tell()
        except FileNotFoundError:
            return
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            try:
                self.listener(record)
            except Exception:  # a failing listener must not stop the notebook's run
                log.exception("progress listener failed on %r", record)


class ProgressPrinter:
    """A progress listener printing ``prefix + progress.describe(record)``, throttled per task.

    Args:
        out: called with each line (``print`` by default).
        prefix: text in front of every line, e.g. "[2/6] section5_1 | ".
        every: seconds between two lines of one task; its first and last records always print.
    """

    def __init__(self, out=print, prefix="", every=5.0):
        self.out, self.prefix, self.every = out, prefix, every
        self._last = {}

    def __call__(self, record):
        try:
            line = progress_lines.describe(record)
            what, done, total = record["what"], record["done"], record["total"]
        except (KeyError, TypeError, ValueError):
            return
        now = time.monotonic()
        last = self._last.get(what)
        if last is not None and 0 < done < total and now - last < self.every:
            return
        self._last[what] = now
        self.out(self.prefix + line)


def parameters_cell_names(path):
    """The names the cell tagged ``parameters`` of the notebook at `path` assigns (empty without one)."""
    import ast

    import nbformat

    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            tree = ast.parse(cell.source)
            targets = [t for node in tree.body if isinstance(node, ast.Assign) for t in node.targets]
            targets += [node.target for node in tree.body if isinstance(node, ast.AnnAssign)]
            return {t.id for t in targets if isinstance(t, ast.Name)}
    return set()


def hide_parameters(notebook):
    """Tag the ``parameters`` and papermill's ``injected-parameters`` cells of `notebook` ``remove-cell``."""
    for cell in notebook.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if ("parameters" in tags or "injected-parameters" in tags) and HIDDEN not in tags:
            cell.setdefault("metadata", {})["tags"] = [*tags, HIDDEN]
    return notebook
