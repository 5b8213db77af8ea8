"""The documentation: every public object of the documented API has a docstring, every page is in the navigation,
the README's links resolve, and every key a run or a report writes is explained on the run-folder page.

``mkdocs build --strict`` (in the CI command) catches broken links inside docs/ and API objects that do not exist;
it does not notice an undocumented function (mkdocstrings just leaves it out), a key that nobody described, or a
broken link in README.md, which is not part of the site. These tests do.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import json
import re
from pathlib import Path

import pytest
import torch

from vaelab.data import DataConfig, load_dataset
from vaelab.eval.evaluate import evaluate_model
from vaelab.eval.features import probe_model
from vaelab.eval.sequences import evaluate_predictions
from vaelab.models import MODELS, DataSpec, build_model
from vaelab.models.vqvae import VQModel
from vaelab.runs import REPORT_KINDS, report_files
from vaelab.training.hooks import EPOCH_METRICS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RUN_FOLDER_PAGE = DOCS / "run-folder.md"


# -- docstrings of the documented API -----------------------------------------------------------------------------


def documented_modules() -> list[str]:
    """The modules the API reference renders: every ``::: module`` line of docs/api/*.md."""
    names = [
        m for page in sorted((DOCS / "api").glob("*.md")) for m in re.findall(r"^::: ([\w.]+)", page.read_text(), re.M)
    ]
    assert names, "docs/api/ renders no module"
    return names


def module_tree(name: str) -> ast.Module:
    return ast.parse(Path(importlib.util.find_spec(name).origin).read_text())


def undocumented_in(tree: ast.Module, module: str, only: set[str] | None = None) -> list[str]:
    """Public functions, classes and methods of classes (``only``: just these top-level names) without a docstring."""
    missing = []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or node.name.startswith("_"):
            continue
        if only is not None and node.name not in only:
            continue
        if not ast.get_docstring(node):
            missing.append(f"{module}.{node.name}")
        if isinstance(node, ast.ClassDef):
            for member in node.body:
                public = not member.name.startswith("_") if hasattr(member, "name") else False
                if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)) and public:
                    if not ast.get_docstring(member):
                        missing.append(f"{module}.{node.name}.{member.name}")
    return missing


def undocumented(module: str) -> list[str]:
    """What ``undocumented_in`` finds in a module, and in the defining modules of what a package exports."""
    missing = undocumented_in(module_tree(module), module)
    exported = getattr(importlib.import_module(module), "__all__", [])
    for name in exported:
        obj = getattr(importlib.import_module(module), name)
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__ != module:
            missing += undocumented_in(module_tree(obj.__module__), obj.__module__, {obj.__qualname__})
    return missing


@pytest.mark.parametrize("module", documented_modules())
def test_every_public_function_class_and_method_of_the_api_reference_has_a_docstring(module):
    assert ast.get_docstring(module_tree(module)), f"{module} has no module docstring"
    missing = sorted(set(undocumented(module)))
    assert not missing, f"no docstring (the API reference would leave them out): {', '.join(missing)}"


def test_the_docstring_check_finds_what_is_missing():
    tree = ast.parse(
        'def shown():\n    """Doc."""\n\ndef bare(): pass\n\ndef _private(): pass\n\n'
        'class C:\n    """Doc."""\n\n    def method(self): pass\n\n    def _hidden(self): pass\n'
    )
    assert undocumented_in(tree, "m") == ["m.bare", "m.C.method"]


# -- the pages and the links ------------------------------------------------------------------------------------


def nav_pages() -> list[str]:
    """The pages mkdocs.yml's ``nav:`` lists: its indented lines that end in a .md file."""
    lines = (ROOT / "mkdocs.yml").read_text().split("\nnav:\n", 1)[1].splitlines()
    block = [line for line in iter(lambda: lines.pop(0) if lines else "", "") if line.startswith(" ")]
    return [m for line in block for m in re.findall(r":\s*([\w./-]+\.md)\s*$", line)]


def test_every_page_is_in_the_navigation_and_every_entry_is_a_page():
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    listed = nav_pages()
    assert sorted(listed) == pages, (
        f"not in mkdocs.yml's nav: {set(pages) - set(listed)}; missing: {set(listed) - set(pages)}"
    )
    assert len(listed) == len(set(listed)), "a page is listed twice"


def heading_slugs(markdown: str) -> set[str]:
    """Anchors of a page's headings, as GitHub and MkDocs' toc make them (lower case, punctuation dropped)."""
    slugs = set()
    for title in re.findall(r"^#+ (.+?)\s*$", markdown, re.M):
        explicit = re.search(r"\{ *#([\w-]+) *\}$", title)
        if explicit:
            slugs.add(explicit.group(1))
            continue
        slug = re.sub(r"[^\w\- ]", "", title.lower()).strip().replace(" ", "-")
        slugs.add(slug)
    return slugs


def test_the_readme_links_point_at_files_and_headings_that_exist():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert links
    for link in links:
        if re.match(r"[a-z]+://", link):
            continue
        path, _, anchor = link.partition("#")
        target = ROOT / path if path else ROOT / "README.md"
        assert target.exists(), f"README.md links to {path}, which does not exist"
        if anchor:
            assert anchor in heading_slugs(target.read_text()), f"README.md links to {link}: no such heading"


def test_the_readme_test_command_is_the_one_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = ci.strip().splitlines()[-1]
    assert command.startswith("python3 -m venv .venv && ") and "mkdocs build --strict" in command
    assert f"```bash\n{command}\n```" in readme, "the README's test command differs from the line .ci/run runs"


# -- every key a run folder holds is explained ---------------------------------------------------------------------


def explained_keys() -> set[str]:
    """Everything the run-folder page writes as code (`key`)."""
    return set(re.findall(r"`([^`\n]+)`", RUN_FOLDER_PAGE.read_text()))


def assert_explained(keys, where: str) -> None:
    missing = sorted(set(keys) - explained_keys())
    assert not missing, f"{where} holds keys that docs/run-folder.md does not explain: {', '.join(missing)}"


def small_data(kind: str, binary: bool):
    name = {"sequences": "moving-digits", "images": "digits"}[kind]
    return load_dataset(DataConfig(name=name), 0, "cpu", binary)


VARIANTS = {"vqvae": [{}, {"ema": False}], "vqvae2": [{}, {"ema": False}], "tdvae": [{}, {"one_step": 1.0}]}


@pytest.mark.parametrize("name", [n for n in MODELS.names() if n != "code-prior"])
def test_every_key_of_eval_json_and_of_the_epoch_rows_is_explained(name):
    cls = MODELS.get(name)
    kind = "sequences" if "sequences" in cls.data_kinds else "images"
    torch.manual_seed(0)
    for options in VARIANTS.get(name, [{}]):
        config = cls.Config(**options)
        data = small_data(kind, cls.needs_binary_data(config))
        model = build_model(name, DataSpec(data.shape, len(data.train)), config)
        if isinstance(model, VQModel):  # the keys that come with a code prior, too
            grids = tuple(s for shape in model.code_shapes() for s in shape)
            prior = build_model(
                "code-prior",
                (sum(h * w for h, w in model.code_shapes()),),
                None,
                codebook_size=config.codebook_size,
                grids=grids,
                channels=4,
                layers=1,
            )
            model.attach_prior(prior)
        assert_explained(evaluate_model(model, data, "test", iw_samples=2), f"eval.json of {name} {options}")
        epoch = {}
        for metrics in EPOCH_METRICS.all(model):
            epoch.update(metrics(model, data, 0))
        assert_explained(epoch, f"the epoch rows of {name}")


def test_the_code_prior_terms_the_probe_and_the_prediction_keys_are_explained():
    prior = build_model("code-prior", (8,), None, codebook_size=4, grids=(2, 2, 2, 2), channels=4, layers=1)
    assert_explained(prior.loss(torch.randint(0, 4, (3, 8)).float()).terms, "a code prior's loss terms")

    data = small_data("images", binary=True)
    ae = build_model("ae", DataSpec(data.shape, len(data.train)), latent_dim=4, hidden=(16,))
    assert_explained(probe_model(ae, data, max_train=200, max_iter=20), "probe.json")

    seqs = small_data("sequences", binary=True)
    tdvae = build_model("tdvae", DataSpec(seqs.shape, len(seqs.train)))
    result = evaluate_predictions({"model": tdvae}, seqs, horizon=2, samples=2)
    assert_explained(result, "prediction.json")
    for name, entry in result["results"].items():
        assert_explained([name, *entry], "prediction.json's results")
    assert_explained(["run", "baselines", "model", "data"], "prediction.json")


def test_every_file_and_key_of_a_trained_run_folder_is_explained(vae_run):
    path = vae_run.path
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in rows} >= {"train", "val"}
    for row in rows:
        assert_explained(row, f"a {row['split']} row of metrics.jsonl")
    assert_explained(json.loads((path / "config.json").read_text()), "config.json")
    assert_explained(json.loads((path / "model" / "config.json").read_text()), "model/config.json")
    checkpoint = torch.load(path / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert_explained(checkpoint, "checkpoint.pt")

    def documented(name: str) -> str:  # a report of other settings is documented as KIND-SETTINGS.json
        kind = name.split("-")[0]
        return f"{kind}-SETTINGS.json" if kind in REPORT_KINDS and "-" in name and name.endswith(".json") else name

    names = [p.name for p in (path / "figures").iterdir()]
    names += [p.name + ("/" if p.is_dir() else "") for p in path.iterdir()]
    assert_explained([documented(n) for n in names], "the run folder's files")
    for report in report_files(path):
        assert_explained(json.loads(report.read_text()), report.name)


def test_a_report_of_every_kind_is_explained(tmp_path, vae_run):
    import shutil

    from vaelab.runs import load

    run = load(shutil.copytree(vae_run.path, tmp_path / "vae"))
    assert_explained(run.write_report("eval.json", {"loss": 1.0}, "vaelab eval RUN"), "a stamped report")
    assert_explained(
        ["eval-SETTINGS.json", "probe-SETTINGS.json", "prediction-SETTINGS.json", "gaps-SETTINGS.json"], "report names"
    )
    assert_explained(["disentanglement-SETTINGS.json", "seed", "factors", "metrics", "quick", "scores"], "reports")


def test_the_key_check_fails_on_a_key_nobody_explained():
    with pytest.raises(AssertionError, match="no_such_key"):
        assert_explained({"loss": 1.0, "no_such_key": 2.0}, "a report")
