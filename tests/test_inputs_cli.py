"""CLI and build: devices, the parameter file of a profile, notebook names, printed commands, per-profile builds,
widget JS."""

import io
import shlex
import shutil
import tarfile
import types

import pytest
from click.testing import CliRunner

from psputil import paths
from psputil.book import cli, params, widgets_js

REPO = paths.REPO_ROOT


def _cli_error(capsys, argv):
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)
    assert caught.value.code == 2
    return capsys.readouterr().err


# --- devices, notebook names, parameter files: refused before any kernel -----------------------------


@pytest.mark.parametrize("device", ["mps", "xpu", "meta", "cuda:99", "tpu9"])
def test_only_devices_this_torch_can_use(capsys, device):
    err = _cli_error(capsys, ["reproduce", "--profile", "smoke", "--device", device])
    assert f"unknown device '{device}'; valid here: auto, cpu" in err


def test_notebook_names_are_checked_by_the_function(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "BUILD", tmp_path / "_build")
    for notebooks, message in ((["../../x"], "unknown notebook(s) ../../x; the toc's notebooks: methods, section5_1"),
                               ("section5_1", "notebooks must be a list of names")):
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            cli.reproduce("smoke", notebooks=notebooks, out=lambda line: None)
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        cli.reproduce("huge", out=lambda line: None)
    assert not (tmp_path / "_build").exists() and not (tmp_path.parent / "x.ipynb").exists()


def _book_with(tmp_path, profile_file_extra):
    """A copy of book/params (and one notebook) whose smoke.yaml has extra keys."""
    book = tmp_path / "book"
    shutil.copytree(REPO / "book" / "params", book / "params")
    shutil.copy(REPO / "book" / "section5_1.ipynb", book / "section5_1.ipynb")
    path = book / "params" / "smoke.yaml"
    path.write_text(path.read_text() + profile_file_extra)
    return book


def test_unknown_key_in_a_parameter_file_is_an_error_naming_file_and_valid_keys(tmp_path, monkeypatch, capsys):
    book = _book_with(tmp_path, "sedes: [0]\n")
    with pytest.raises(ValueError) as caught:
        cli.parameters("smoke", "section5_1", book / "params")
    message = str(caught.value)
    assert "smoke.yaml: unknown parameter(s) 'sedes' (did you mean 'seeds'?) for the notebooks" in message
    assert "valid: profile, device, download, executor" in message
    with pytest.raises(ValueError, match="sedes"):  # before papermill starts a kernel: nothing is written
        cli.execute("section5_1", "smoke", book=book, executed=tmp_path / "executed")
    assert not (tmp_path / "executed").exists()
    monkeypatch.setattr(cli, "BOOK", book)
    monkeypatch.setattr(cli, "parameters", lambda profile, notebook=None, params=None, _real=cli.parameters:
                        _real(profile, notebook, book / "params"))
    assert "unknown parameter(s) 'sedes'" in _cli_error(capsys, ["reproduce", "--profile", "smoke", "--no-build"])


def test_bad_values_in_a_parameter_file_are_refused(tmp_path):
    book = _book_with(tmp_path, "")
    path = book / "params" / "smoke.yaml"
    path.write_text(path.read_text().replace("seeds: [0, 1]", "seeds: 0"))
    with pytest.raises(ValueError, match="smoke.yaml: parameter seeds = 0 is not valid"):
        cli.parameters("smoke", "section5_1", book / "params")
    with pytest.raises(ValueError, match="smoke.yaml: parameter seeds = 0 is not valid"):  # whichever notebook asks
        cli.parameters("smoke", "methods", book / "params")
    path.write_text("- a list, not a mapping\n")
    with pytest.raises(ValueError, match="a parameter file must be a YAML mapping"):
        cli.parameters("smoke", "section5_1", book / "params")
    path.unlink()
    with pytest.raises(ValueError, match="smoke.yaml: no such parameter file"):
        cli.parameters("smoke", "section5_1", book / "params")


def test_a_notebook_receives_its_own_parameters_from_the_one_file():
    every = cli.parameters("quick")
    for notebook, names in params.NOTEBOOKS.items():
        values, _ = cli.run_values(notebook, "quick")
        assert set(values) == set(names) and all(values[k] == every[k] for k in names if k in every)


# --- every printed command reproduces what it describes ---------------------------------------------


def _papermill_sees(command, monkeypatch):
    """Run a printed command line through papermill's own CLI; returns what it would execute with."""
    import papermill.cli

    seen = {}
    monkeypatch.setattr(papermill.cli, "execute_notebook", lambda **kwargs: seen.update(kwargs))
    words = shlex.split(command)
    assert words[:2] == ["TQDM_DISABLE=1", "papermill"]
    result = CliRunner().invoke(papermill.cli.papermill, words[2:])
    assert result.exit_code == 0, result.output
    return seen


@pytest.mark.parametrize("notebook, profile, flags", [
    ("section5_2", "smoke", {}),
    ("section5_2", "quick", {"device": "cpu"}),
    ("transfer", "paper", {"download": True, "executor": "process-pool", "workers": 3}),
    ("conclusions", "smoke", {"executor": "ray", "ray_address": "10.0.0.1:6379"}),
])
def test_printed_papermill_command_gets_the_same_parameters(monkeypatch, notebook, profile, flags):
    monkeypatch.chdir(REPO)
    output = f"_build/{profile}/executed/{notebook}.ipynb"
    command = cli.papermill_command(notebook, profile, output, **flags)
    assert f" -f book/params/{profile}.yaml " in command and command.count(" -f ") == 1
    if "device" in flags:
        assert f"-p device {flags['device']}" in command
    seen = _papermill_sees(command, monkeypatch)
    values, _ = cli.run_values(notebook, profile, **flags)
    # the notebook's own parameters are exactly those reproduce passes; the file's others are ignored by it
    assert {k: seen["parameters"][k] for k in values} == values
    assert set(seen["parameters"]) - set(values) <= set(params.ALL) - set(params.NOTEBOOKS[notebook])
    assert (seen["input_path"], seen["output_path"]) == (f"book/{notebook}.ipynb", output)
    assert (seen["kernel_name"], seen["cwd"]) == (cli.KERNEL, "book")


def test_papermill_options_survive_papermills_type_guessing(monkeypatch):
    values = {"ray_address": "1234", "device": "cpu", "workers": None, "download": True, "seeds": [0, 1],
              "rates": [20.0, 30.0], "profile": "True"}
    words = ["TQDM_DISABLE=1", "papermill", "in.ipynb", "out.ipynb"]
    for name, value in values.items():
        words += cli._papermill_option(name, value)
    assert _papermill_sees(shlex.join(words), monkeypatch)["parameters"] == values


def test_reproduce_prints_the_command_it_runs_and_keeps_one_build_per_profile(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "BUILD", tmp_path / "_build")
    builds, lines = [], []

    def fake_execute(name, profile, device, **kwargs):
        target = cli.executed_dir(profile) / f"{name}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(profile)

    monkeypatch.setattr(cli, "execute", fake_execute)
    monkeypatch.setattr(cli, "build", lambda source, strict=False, html=None: builds.append((source, html)) or 0)
    for profile in ("smoke", "quick"):
        assert cli.reproduce(profile, "cpu", ["section5_2"], out=lines.append) == 0
    root = tmp_path / "_build"
    assert builds == [(root / p / "executed", root / p / "html") for p in ("smoke", "quick")]
    assert [(root / p / "executed" / "section5_2.ipynb").read_text() for p in ("smoke", "quick")] == ["smoke", "quick"]
    assert (root / "smoke" / "executed" / "section5_3.ipynb").is_symlink()  # the mirror of book/
    run_line = next(line for line in lines if line.startswith("[1/1] section5_2: TQDM_DISABLE=1 papermill"))
    assert "-p device cpu" in run_line and str(root / "smoke" / "executed" / "section5_2.ipynb") in run_line
    assert lines[-1].endswith(f"the book: {root / 'quick' / 'html' / 'index.html'}")


def test_papermill_command_subcommand_prints_the_one_notebook_command(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert cli.main(["papermill-command", "--profile", "smoke", "--device", "cpu", "section5_2"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == ("TQDM_DISABLE=1 papermill book/section5_2.ipynb section5_2-smoke.ipynb -f book/params/smoke.yaml "
                       "-k python3 --cwd book -p device cpu")
    assert "unknown notebook(s) ../x" in _cli_error(capsys, ["papermill-command", "../x"])


def test_download_flag_reaches_the_notebooks(monkeypatch):
    monkeypatch.chdir(REPO)
    values, overrides = cli.run_values("section5_1", "quick", download=True)
    assert values["download"] is True and overrides["download"] is True
    assert "-p download True" in cli.papermill_command("section5_1", "quick", "out.ipynb", download=True)


# --- the widget JavaScript: complete offline book or a failed build; safe unpacking -------------------


def _tarball(path, members):
    """A .tgz with (name, bytes or ('symlink', target)) members."""
    with tarfile.open(path, "w:gz") as archive:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if isinstance(content, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, content[1]
                archive.addfile(info)
            else:
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
    return path


@pytest.mark.parametrize("members, select, fragment", [
    ([("package/es5/output/chtml/fonts/woff-v2/../../../../../../escape.woff", b"x")], widgets_js._mathjax_files,
     "would be written to 'output/chtml/fonts/woff-v2/../../../../../../escape.woff', outside"),
    ([("package/es5/output/chtml/fonts/woff-v2/../../../../../../../../escape.woff", b"x")],
     widgets_js._mathjax_files, "refused by tarfile's data filter"),
    ([("package/es5/output/chtml/fonts/woff-v2/sub/x.woff", b"x"), ("/abs/evil.woff", b"x")], lambda name: name,
     "member '/abs/evil.woff'"),
    ([("package/dist/fa.woff", ("symlink", "/etc/passwd"))], widgets_js._widget_files, "is a link"),
])
def test_unpack_refuses_members_that_leave_the_cache(tmp_path, members, select, fragment):
    tarball = _tarball(tmp_path / "p.tgz", [("package/LICENSE", b"licence")] + members)
    target = tmp_path / "cache" / "target"
    with pytest.raises(ValueError, match="refus") as caught:
        widgets_js._unpack(tarball, target, "pkg@1", select)
    assert fragment in str(caught.value)
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "p.tgz"]
    assert list((tmp_path / "cache").iterdir()) == []


def test_unpack_writes_the_selected_files(tmp_path):
    tarball = _tarball(tmp_path / "p.tgz", [("package/es5/tex-mml-chtml.js", b"js"), ("package/README.md", b"no"),
                                            ("package/es5/output/chtml/fonts/woff-v2/a.woff", b"font")])
    widgets_js._unpack(tarball, tmp_path / "mathjax", "mathjax@3", widgets_js._mathjax_files)
    files = sorted(str(p.relative_to(tmp_path / "mathjax")) for p in (tmp_path / "mathjax").rglob("*") if p.is_file())
    assert files == ["VERSION", "output/chtml/fonts/woff-v2/a.woff", "tex-mml-chtml.js"]


def _config():
    return types.SimpleNamespace(html_static_path=[], html_context={}, nb_ipywidgets_js="cdn", mathjax_path="cdn")


def test_build_fails_without_the_widget_javascript_unless_cdn_opt_in(monkeypatch):
    from sphinx.errors import ExtensionError

    monkeypatch.setattr(widgets_js, "fetch_or_reason", lambda *args, **kwargs: (None, "npm (npm) not found"))
    monkeypatch.delenv(widgets_js.CDN_OPT_IN, raising=False)
    with pytest.raises(ExtensionError) as caught:
        widgets_js._config_inited(None, _config())
    message = str(caught.value)
    assert "would load scripts from public CDNs and not work offline" in message
    assert "@jupyter-widgets/html-manager 1.0.15: npm (npm) not found" in message
    assert "apt-get install npm" in message and "PSPUTIL_WIDGETS_CDN=1" in message
    monkeypatch.setenv(widgets_js.CDN_OPT_IN, "1")
    config = _config()
    widgets_js._config_inited(None, config)
    assert (config.nb_ipywidgets_js, config.mathjax_path, config.html_static_path) == ("cdn", "cdn", [str(widgets_js.STATIC)])


def test_build_serves_the_fetched_files(monkeypatch, tmp_path):
    monkeypatch.setattr(widgets_js, "fetch_or_reason", lambda target=None, *args, **kwargs: (tmp_path / "x", ""))
    monkeypatch.setattr(widgets_js, "is_fetched", lambda *args: True)
    monkeypatch.delenv(widgets_js.CDN_OPT_IN, raising=False)
    config = _config()
    widgets_js._config_inited(None, config)
    assert config.nb_ipywidgets_js == {"x/embed.js": {}} and config.mathjax_path == "x/tex-mml-chtml.js"
    assert config.html_static_path == [str(widgets_js.CACHE), str(widgets_js.STATIC)]
