"""Every Python example in docs/ runs as written (imports included)."""

import re
from pathlib import Path

import pytest

from tests.conftest import REPO

BLOCKS = [(p.name, i, b) for p in sorted((REPO / "docs").glob("*.md"))
          for i, b in enumerate(re.findall(r"```python\n(.*?)```", p.read_text(), re.S))]


@pytest.mark.parametrize("name,index,code", BLOCKS, ids=[f"{n}-{i}" for n, i, _ in BLOCKS])
def test_docs_example_runs(name, index, code):
    exec(compile(code, f"{name} example {index + 1}", "exec"), {})


def _github_anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation other than '-' and '_' dropped, spaces -> '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_links_to_its_own_sections_resolve():
    text = (REPO / "README.md").read_text()
    anchors = {_github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert links, "the README's contents line links to its sections"
    assert not [a for a in links if a not in anchors], "README links to sections that do not exist"


README_MAX_LINES = 250
# narration of how the work was done (working periods and their numbers, "the previous ..."); history lives in git
NARRATION = re.compile(r"(?i)\bworking (?:period|session)s?\b|\b(?:this|that|next|earlier|later|previous|another|our|"
                       r"(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|\w+teenth|twenty-\w+))"
                       r" sessions?\b|\bsessions\b|\bthe previous\b|session to session")
TEXT_SUFFIXES = {".md", ".py", ".txt", ".cfg", ".toml", ".sh"}


def _tracked_text_files():
    import subprocess

    names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return [REPO / n for n in names if (REPO / n).suffix in TEXT_SUFFIXES and (REPO / n).is_file()]


def test_readme_is_short():
    n = len((REPO / "README.md").read_text().splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES}): move detail to docs/"


def test_every_relative_link_in_the_readme_and_docs_resolves():
    broken = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert not broken, f"links to nothing: {broken}"


def test_every_command_the_readme_shows_names_a_file_and_flags_that_exist():
    from medattn.training.cli import SHARED_FLAGS
    from tests.conftest import load_script

    text = (REPO / "README.md").read_text()
    commands = [line.split("#")[0] for block in re.findall(r"```bash\n(.*?)```", text, re.S)
                for line in block.splitlines()]
    scripts = [c for c in commands if "reproductions/" in c]
    assert scripts, "the README shows how to run the main job"
    for c in scripts:
        path = re.search(r"(reproductions/\w+\.py)", c).group(1)
        assert (REPO / path).is_file(), c
        extra = tuple(load_script("reproductions", Path(path).stem).REPRODUCTION.extra_flags or ())
        unknown = [f for f in re.findall(r"(?<!\S)(--[\w-]+)", c) if f not in SHARED_FLAGS + extra]
        assert not unknown, f"{c}: no such flag {unknown}"
    for c in commands:  # other files a command names
        for f in re.findall(r"(?<!\S)((?:requirements\.txt|\.ci/\w+|benchmarks/\w+\.py))", c):
            assert (REPO / f).exists(), c


def test_no_narration_of_how_the_work_was_done():
    found = []
    for path in _tracked_text_files():
        if path == Path(__file__):  # its own examples below
            continue
        for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if NARRATION.search(line) and 'scope="session"' not in line:
                found.append(f"{path.relative_to(REPO)}:{i}: {line.strip()[:100]}")
    assert not found, "narration (history belongs in git and run.json):\n" + "\n".join(found[:20])


def test_the_narration_check_finds_what_it_should():
    for line in ("measured in this session", "(2026-12-02, seventh session)", "over sessions", "the previous table"):
        assert NARRATION.search(line), line
    for line in ('@pytest.fixture(scope="session")', "a process stopped before", "previous processes"):
        assert not NARRATION.search(line), line


def test_a_missing_keras_backend_is_one_line_naming_the_extra():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", "import sys; sys.modules['tensorflow'] = None; import medattn.layers"],
                       capture_output=True, text=True, cwd=REPO, env={"KERAS_BACKEND": "tensorflow", "PATH": ""})
    assert r.returncode != 0
    assert 'ImportError: medattn needs a Keras backend: install its "cpu" extra' in r.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("paper", ["dcnnimaf", "mias_fusion", "emtnet", "brain_tumor_transfer", "dcat"])
def test_profiles_are_described_once_and_shown_the_same_by_help_and_the_page(paper):
    from medattn.runner.reproduction import profiles_help
    from tests.conftest import load_script

    mod = load_script("reproductions", paper)
    repro = mod.REPRODUCTION
    assert set(repro.profile_notes) == set(mod.PROFILES), "every profile has its one description"
    page = (REPO / "docs" / f"{paper}.md").read_text()
    shown = profiles_help(repro)
    for name, note in repro.profile_notes.items():
        assert f"- `{name}`: {note}" in page, f"docs/{paper}.md does not show profile {name} as defined"
        assert f"  {name}: {note}" in shown
    assert "measured:" in shown  # the committed profile's time, read from its run.json


def test_help_answers_without_importing_tensorflow():
    import subprocess
    import sys

    code = ("import sys, runpy; sys.argv = ['dcnnimaf.py', '--help']\n"
            "try:\n    runpy.run_path('reproductions/dcnnimaf.py', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('tensorflow' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.stdout.strip().splitlines()[-1] == "False" and "Profiles:" in r.stdout


@pytest.mark.parametrize("paper", ["dcnnimaf", "mias_fusion", "emtnet", "brain_tumor_transfer", "dcat"])
def test_each_paper_page_follows_the_outline(paper):
    """Run it (profiles, commands, measured times), the generated paper-vs-ours table, why our numbers differ, and
    the generated table of what was tried, linked to its selection folder; in that order."""
    page = (REPO / "docs" / f"{paper}.md").read_text()
    marks = ["## Run it", "measured", f"<!-- table: results/{paper}/", "## Why our numbers differ",
             "## What was tried", "selection/README.md", "/selection/tried.json -->"]
    at = [page.find(m) for m in marks]
    assert -1 not in at, [m for m, i in zip(marks, at) if i == -1]
    assert at == sorted(at), "the sections are out of order"
    prose = re.sub(r"<!-- (table|include): .*?<!-- /(table|include) -->", "", page, flags=re.S).splitlines()
    assert len(prose) <= 100, f"docs/{paper}.md has {len(prose)} lines besides its generated blocks"


def test_speed_figures_quoted_in_the_readme_are_the_committed_measurements():
    import json

    speed = json.loads((REPO / "benchmarks/results/speed.json").read_text())
    readme = (REPO / "README.md").read_text()
    main_page = (REPO / "docs/dcnnimaf.md").read_text()
    suite = speed["suite_minutes"]
    default = speed["default_run_seconds"]
    assert f"{suite['value']} minutes" in readme and suite["git_commit"] in readme, "README: suite time"
    for name, text in (("README.md", readme), ("docs/dcnnimaf.md", main_page)):
        quoted = re.findall(r"([\d.]+) s from the command to the (?:printed )?table", text)
        assert quoted == [f"{default['value']}"], f"{name} quotes {quoted}, speed.json has {default['value']}"
    assert f"{speed['linknet_vs_segmentation_models']['value']}x" in readme, "README: LinkNet ratio"
