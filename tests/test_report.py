"""bocb.report on a hand-made CSV of 4 backbones x 5 optimizers x 2 seeds (files, LaTeX, HTML in Chromium), and on
the store of a real tiny run (`bocb report STORE` writes what `bocb run` wrote)."""
from __future__ import annotations

import html
import itertools
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest
from conftest import bocb_main, report_files, run_main, shared_dir, write_spec

from bocb.paper import ComparePaper
from bocb.report import write_report

pytestmark = pytest.mark.xdist_group("report")  # its trained run, made once, on one worker
BACKBONES = ("resnet50", "deit_s", "vgg13_bn", "convnext_t")
OPTIMIZERS = ("sgd", "adamw", "lamb", "adan", "lars")
FIGURES = ("heatmap", "violin", "box_backbone", "box_optimizer", "hp_backbone", "hp_optimizer", "interaction",
           "profiles", *(f"tuning_{b}" for b in BACKBONES))
CATEGORIES = {"sgd": "a", "adamw": "b", "lamb": "b", "adan": "b", "lars": "c"}  # as the optimizer registry has them


def _results() -> pd.DataFrame:
    """Deterministic results: lr 0.1 best on validation; deit_s + sgd far behind (a coupling failure). Stated as
    CIFAR-100 with paper-size models (results.csv's dataset and size columns): like for like with Table 1."""
    rows = []
    for (i, b), (j, o), seed, lr in itertools.product(enumerate(BACKBONES), enumerate(OPTIMIZERS), (0, 1),
                                                      (0.01, 0.1, 1.0)):
        top1 = 60 + 2 * i + 0.5 * j + 0.3 * seed + (5 if lr == 0.1 else 0) - (20 if (b, o) == ("deit_s", "sgd") else 0)
        rows.append(dict(backbone=b, optimizer=o, seed=seed, lr=lr, weight_decay=0.05, val_top1=top1 + 0.1,
                         test_top1=top1, state="done", time_s=10 + j, peak_mem_mb=100 + i, lr_grid="0.01;0.1;1",
                         wd_grid="0.05", num_classes=100, optimizer_category=CATEGORIES[o], dataset="cifar100",
                         size="paper"))
    rows[-1] |= {"state": "diverged"}  # convnext_t / lars / seed 1 / lr 1: chance level, not selected
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    csv = tmp_path_factory.mktemp("in") / "results.csv"
    _results().to_csv(csv, index=False)
    out = tmp_path_factory.mktemp("report")
    write_report(csv, out, n_boot=50, compare_paper=ComparePaper(1))
    return out


def test_report_files(report_dir):
    for name in FIGURES:
        assert (report_dir / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "<svg" in (report_dir / f"{name}.svg").read_text()
    matrix = pd.read_csv(report_dir / "matrix.csv", index_col=0)
    assert list(matrix.columns) == list(BACKBONES) and list(matrix.index) == list(OPTIMIZERS)
    assert matrix.loc["sgd", "deit_s"] == pytest.approx(62 + 5 + 0.15 - 20)
    cells = pd.read_csv(report_dir / "cells.csv")
    assert (cells["lr"] == 0.1).all() and set(cells["selected_on"]) == {"val_top1"}
    markdown = (report_dir / "report.md").read_text()
    assert "| optimizer | resnet50 | deit_s | vgg13_bn | convnext_t |" in markdown


def test_html_is_self_contained(report_dir):
    page = (report_dir / "index.html").read_text()
    assert not re.search(r"""(src|href)=["']https?:""", page)
    assert page.count('src="data:image/png;base64,') == len(FIGURES)
    assert 'id="heatmap-table"' in page and "selected on <b>val_top1</b>" in page
    assert "Beside the paper (Table 1: CIFAR-100 top-1 (%)): ours on cifar100, paper-size models" in page
    assert "78.76" in page and "not comparable" not in page.lower()  # resnet50 / sgd in Table 1, like for like
    assert "<th>ours (cifar100, paper-size models)</th>" in page and "Left out" not in page  # Table 1 has them all
    assert "## Beside the paper (Table 1: CIFAR-100 top-1 (%))" in (report_dir / "report.md").read_text()


def test_tuning_cost_in_every_format(report_dir):
    curves = pd.read_csv(report_dir / "tuning.csv").set_index(["backbone", "optimizer", "k"]).sort_index()
    # resnet50 / sgd: validation top-1 over the two seeds is 60.25 at lr 0.01 and lr 1, 65.25 at lr 0.1.
    # The best of k of 3: lr 0.1 is among them with probability k / 3.
    assert curves.loc[("resnet50", "sgd"), "expected_best"].tolist() == pytest.approx([60.25 + 5 * k / 3
                                                                                      for k in (1, 2, 3)])
    # convnext_t / lars: lr 1 diverged at seed 1 (chance, 1 %): (68.1 + 1) / 2 on validation, ranked last;
    # lr 0.1 73.25 (test 73.15), lr 0.01 68.25 (test 68.15), lr 1 on test (68 + 1) / 2.
    lars = curves.loc[("convnext_t", "lars")]
    assert lars["expected_best"].tolist() == pytest.approx([(73.25 + 68.25 + 34.55) / 3, (2 * 73.25 + 68.25) / 3,
                                                            73.25])
    assert lars["expected_test_top1"].tolist() == pytest.approx([(73.15 + 68.15 + 34.5) / 3,
                                                                 (2 * 73.15 + 68.15) / 3, 73.15])
    summary = pd.read_csv(report_dir / "tuning_summary.csv")
    assert len(summary) == len(BACKBONES) * len(OPTIMIZERS)
    assert set(summary["n_configs"]) == {3} and set(summary["configs_needed"]) == {3}
    assert "## Tuning cost" in (report_dir / "report.md").read_text()
    assert "| sgd | 3/3 | 3/3 | 3/3 | 3/3 |" in (report_dir / "report.md").read_text()
    tex = (report_dir / "tuning.tex").read_text().splitlines()
    assert tex[0] == r"\begin{tabular}{lrrrr}" and tex[4] == r"sgd & 3/3 & 3/3 & 3/3 & 3/3 \\"
    page = (report_dir / "index.html").read_text()
    assert 'id="tuning-cost"' in page and page.count('class="fig-tuning"') == len(BACKBONES)
    assert 'id="fig-hp-backbone"' in page and 'id="fig-hp-optimizer"' in page


def _drawn_colours(svg: Path) -> dict[str, set[str]]:
    """optimizer stem -> the fill and stroke colours of every SVG element the report tagged with that optimizer
    (its artists and its legend entries: ids 'optimizer-<name>')."""
    found: dict[str, set[str]] = {}
    for element in ET.parse(svg).getroot().iter():
        tag = element.get("id") or ""
        if tag.startswith("optimizer-"):
            drawn = ET.tostring(element, encoding="unicode")
            found.setdefault(tag.removeprefix("optimizer-"), set()).update(
                re.findall(r"(?:fill|stroke):\s*(#[0-9a-f]{6})", drawn))
    return found


def _check_one_colour_per_optimizer(report: Path, expected_figures: list[str]) -> None:
    """Every optimizer, in every figure that draws it, in its one colour (assigned in the heat map's order) and
    in no other optimizer's colour; every figure in ``expected_figures`` draws every optimizer."""
    from matplotlib.colors import to_hex

    from bocb.colours import optimizer_colours

    order = pd.read_csv(report / "matrix.csv", index_col=0).index
    colours = {o: to_hex(c) for o, c in optimizer_colours(order).items()}
    assert len(set(colours.values())) == len(colours)
    for svg in sorted(report.glob("*.svg")):
        drawn = _drawn_colours(svg)
        if svg.stem in expected_figures:
            assert set(drawn) == set(colours), svg.name
        for optimizer, seen in drawn.items():
            assert colours[optimizer] in seen, (svg.name, optimizer)
            assert not seen & (set(colours.values()) - {colours[optimizer]}), (svg.name, optimizer, seen)


def test_each_optimizer_keeps_its_colour(report_dir):
    optimizer_figures = [f for f in FIGURES if f != "heatmap"]
    _check_one_colour_per_optimizer(report_dir, optimizer_figures)


def test_latex_table_structure(report_dir, tmp_path):
    tex = (report_dir / "heatmap.tex").read_text()
    lines = tex.strip().splitlines()
    assert lines[0] == r"\begin{tabular}{lrrrr}" and lines[-1] == r"\end{tabular}"
    rules = (r"\toprule", r"\midrule", r"\bottomrule")
    assert [line for line in lines if line in rules] == list(rules)
    assert lines[2] == r"Optimizer & resnet50 & deit\_s & vgg13\_bn & convnext\_t \\"
    body = lines[4:-2]
    assert len(body) == 5 and all(line.count("&") == 4 and line.endswith(r"\\") for line in body)
    sgd = body[0].split(" & ")
    assert sgd[2] == r"\textcolor{gray}{47.15}"  # deit_s + sgd fails Eq. 1
    lars = body[4].split(" & ")
    assert lars[1] == r"\textbf{67.15}"  # resnet50 + lars is in its top-4
    if shutil.which("pdflatex"):
        doc = tmp_path / "t.tex"
        doc.write_text("\\documentclass{article}\\usepackage{booktabs,xcolor}\\begin{document}\n" + tex
                       + "\\end{document}\n")
        run = subprocess.run(["pdflatex", "-interaction=nonstopmode", doc.name], cwd=tmp_path,
                             capture_output=True, timeout=120)
        assert run.returncode == 0, run.stdout[-2000:]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _rendered(page: Path, tmp_path: Path) -> str:
    """The DOM of ``page`` after its load scripts ran in headless Chromium (skips without a browser)."""
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on PATH (apt-get install -y chromium) to load the HTML report")
    return subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--window-size=1280,900", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120).stdout


def _written_by_script(dom: str, element: str) -> list:
    check = re.search(rf'<pre id="{element}"[^>]*>([^<]*)</pre>', dom)
    assert check and check.group(1) != "pending", f"the page's load script did not fill #{element}"
    return json.loads(html.unescape(check.group(1)))


@pytest.mark.chromium
def test_html_opens_in_headless_chromium(report_dir, tmp_path):
    dom = _rendered(report_dir / "index.html", tmp_path)
    widths = _written_by_script(dom, "image-check")
    assert len(widths) == len(FIGURES) and all(w > 0 for w in widths)
    assert 'id="heatmap-table"' in dom and dom.count("<tr>") >= len(OPTIMIZERS) + 1


def _heatmap_cells(page: str) -> list[tuple[str, str, str, str]]:
    """(classes, background, text colour, text) of each heat-map table cell, as the page declares them."""
    table = page[page.index('id="heatmap-table"'):]
    table = table[:table.index("</table>")]
    return re.findall(r'<td class="([^"]*)" style="background:(#[0-9a-f]{6});color:(#[0-9a-f]{6})">([^<]*)</td>',
                      table)


def test_wcag_contrast_by_the_formula():
    from bocb.report._contrast import WCAG_AA, contrast_ratio, text_colour

    assert contrast_ratio("#000000", "#ffffff") == pytest.approx(21)
    assert contrast_ratio("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)  # WCAG's grey that just fails AA
    assert contrast_ratio("#ffffff", "#767676") == pytest.approx(4.54, abs=0.01)  # ... and the one that passes
    backgrounds = [f"#{v:02x}{v:02x}{v:02x}" for v in range(256)] + [(r / 7, g / 7, b / 7) for r, g, b in
                                                                        itertools.product(range(8), repeat=3)]
    assert min(contrast_ratio(text_colour(c), c) for c in backgrounds) >= WCAG_AA


def test_heatmap_marks_match_their_key(report_dir):
    from bocb.report._contrast import WCAG_AA, contrast_ratio

    page = (report_dir / "index.html").read_text()
    cells = _heatmap_cells(page)
    assert len(cells) == len(BACKBONES) * len(OPTIMIZERS)
    assert all(contrast_ratio(background, text) >= WCAG_AA for _, background, text, _ in cells)
    resnet50 = {optimizer: cells[i * len(BACKBONES)] for i, optimizer in enumerate(OPTIMIZERS)}
    # resnet50: 65.15 + 0.5 j; IQR 1, so Eq. 1 fails below 67.15 - 1: sgd and adamw; top-4: all but sgd
    assert [o for o, c in resnet50.items() if "failure" in c[0]] == ["sgd", "adamw"]
    assert [o for o, c in resnet50.items() if "top4" in c[0]] == ["adamw", "lamb", "adan", "lars"]
    key = html.unescape(re.search(r'<p id="heatmap-key">(.*?)</p>', page, re.S).group(1))
    assert "bold</span>: among the backbone's 4 best" in key and "dashed box</span>: fails Eq. 1" in key
    assert "†" not in key and not any("†" in c[3] for c in cells)  # no chosen configuration had a diverged seed
    both = html.unescape(re.search(r'<p id="top-and-failed">(.*?)</p>', page, re.S).group(1))
    assert both.startswith("4 cell(s) are both top-4 and Eq.-1 failures") and "resnet50 + adamw" in both
    markdown = (report_dir / "report.md").read_text()
    assert "**bold**: among" in markdown and "_italics_: fails Eq. 1" in markdown and "†" not in markdown


def test_a_diverged_seed_of_a_chosen_configuration_is_marked(tmp_path):
    frame = _results()
    diverged = (frame["backbone"] == "resnet50") & (frame["optimizer"] == "sgd") & (frame["seed"] == 1)
    frame.loc[diverged, "state"] = "diverged"  # every configuration of the cell: the chosen one too
    write_report(frame, tmp_path, n_boot=10)
    page = (tmp_path / "index.html").read_text()
    marked = [c[3] for c in _heatmap_cells(page) if "†" in c[3]]
    # a diverged seed ranks its configuration last, so all tie and the first label, lr=0.01, is chosen:
    # its seed 0 scored 60.0 and seed 1 chance (1 %)
    assert marked == [f"{(60.0 + 1) / 2:.2f}†"]
    assert "†</span>: a seed of the chosen configuration diverged" in page
    assert "| sgd | _30.50_† |" in (tmp_path / "report.md").read_text()  # a failure, italic, with its mark


def test_analysis_by_optimizer_category(report_dir):
    table = pd.read_csv(report_dir / "categories.csv")
    resnet50 = table[table["backbone"] == "resnet50"].set_index("category")
    assert resnet50["optimizers"].to_dict() == {"a": "sgd", "b": "adamw, lamb, adan", "c": "lars"}
    assert resnet50["mean_rank"].to_dict() == {"a": 5, "b": 3, "c": 1}  # places by test top-1: lars first
    assert resnet50["failures"].to_dict() == {"a": 1, "b": 1, "c": 0}  # sgd and adamw fail Eq. 1
    assert resnet50.loc["b", "spread"] == pytest.approx(1.0) and resnet50[["spread"]].loc[["a", "c"]].isna().all().all()
    overall = table[table["backbone"] == "all backbones"].set_index("category")
    assert overall["failures"].to_dict() == {"a": 4, "b": 4, "c": 0}
    assert overall["mean_rank"].to_dict() == {"a": 5, "b": 3, "c": 1}
    page = (report_dir / "index.html").read_text()
    assert 'id="categories"' in page and "## By optimizer category" in (report_dir / "report.md").read_text()


def test_cli_report_and_bad_input(tmp_path, capsys):
    csv = tmp_path / "r.csv"
    _results().to_csv(csv, index=False)
    code, _, err = bocb_main("report", str(csv), "-o", str(tmp_path / "out"), "--n-boot", "20", capsys=capsys)
    assert code == 0, err
    assert (tmp_path / "out" / "index.html").is_file()
    _results().drop(columns=["optimizer"]).to_csv(tmp_path / "bad.csv", index=False)
    for args, message in (([str(tmp_path / "missing.csv")], "file not found"),
                          ([str(tmp_path / "bad.csv")], "missing column 'optimizer'"),
                          ([str(csv), "--gamma", "0"], "--gamma: must be > 0"),
                          ([str(csv), "--paper-table", "2"], "--paper-table: chooses the table of --compare-paper"),
                          ([str(csv), "--compare-paper", "--paper-table", "3"], "--paper-table: unknown table 3"),
                          ([str(csv), "--compare-paper", "--paper-table", "2"],
                           "--compare-paper: the results are cifar100, paper-size models and the paper's Table 2 "
                           "is ImageNet-1K, paper-size models: not comparable")):
        code, _, err = bocb_main("report", *args, "-o", str(tmp_path / "x"), capsys=capsys)
        assert code == 2 and message in err and "Traceback" not in err
        assert err.strip().count("\n") == 0 and not (tmp_path / "x").exists()


def test_cli_compares_a_cifar100_csv_at_paper_size_with_table1(tmp_path, capsys):
    csv = tmp_path / "results.csv"
    _results().to_csv(csv, index=False)
    code, _, err = bocb_main("report", str(csv), "-o", str(tmp_path / "out"), "--n-boot", "20", "--compare-paper",
                             capsys=capsys)
    assert code == 0, err
    page = (tmp_path / "out" / "index.html").read_text()
    assert '<h2 id="paper">Beside the paper (Table 1: CIFAR-100 top-1 (%)): ours on cifar100, paper-size models' in page
    assert 'id="not-comparable"' not in page


# A real tiny run: 2 backbones x 4 optimizers of three categories (a, b, b, d) x 2 learning rates, 2 epochs.
RUN_OPTIMIZERS = ("sgd", "adamw", "lamb", "adagrad")
RUN_SPEC = {"backbones": ["resnet50", "deit_s"], "optimizers": list(RUN_OPTIMIZERS),
            "search": {"lr_points": 2, "wd_points": 1}, "recipe_overrides": {"hflip": False, "crop_padding": 0}}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The run folder of RUN_SPEC (store, results.csv, report/), trained once by `bocb run`; read only."""
    def make(out: Path) -> None:
        assert run_main("run", str(write_spec(out / "spec.yaml", **RUN_SPEC)), "--out", str(out), "--workers",
                        "2") == 0

    return shared_dir(tmp_path_factory, "report-run", make)


def test_bocb_report_of_a_store_is_the_report_bocb_run_wrote(tiny_run, tmp_path, capsys):
    again = tmp_path / "again"
    code, _, err = bocb_main("report", str(tiny_run / "bocb.db"), "-o", str(again), capsys=capsys)
    assert code == 0, err
    written, rewritten = report_files(tiny_run / "report"), report_files(again)
    assert written == rewritten
    figures = written["png"]
    for kind in ("alpha_bars", "layers_alpha", "ridge_resnet50_alpha", "curves_resnet50", "tuning_resnet50"):
        assert f"{kind}.png" in figures, kind
    families = pd.read_csv(tiny_run / "report" / "categories.csv").query("backbone == 'all backbones'")
    assert dict(zip(families["category"], families["optimizers"])) == {"a": "sgd", "b": "adamw, lamb", "d": "adagrad"}
    for table in written["csv"] + written["tex"]:  # the same analysis: the same numbers
        assert (again / table).read_text() == (tiny_run / "report" / table).read_text(), table
    captions = [re.findall(r"<figcaption>(.*?)</figcaption>", (d / "index.html").read_text(), re.S)
                for d in (tiny_run / "report", again)]
    assert captions[0] == captions[1] and len(captions[0]) == len(figures)  # a caption under every figure


def test_compare_paper_refuses_a_digits_run_in_one_line_and_labels_it_when_asked(tiny_run, tmp_path, capsys):
    results = pd.read_csv(tiny_run / "results.csv")
    assert set(results["dataset"]) == {"digits"} and set(results["size"]) == {"tiny"}  # what a CSV states
    store = tiny_run / "bocb.db"
    stored = store.read_bytes()
    for source in (store, tiny_run / "results.csv"):
        code, _, err = bocb_main("report", str(source), "-o", str(tmp_path / "refused"), "--compare-paper",
                                 capsys=capsys)
        assert code == 2 and err.strip().count("\n") == 0, err
        assert err.startswith("error: --compare-paper: the results are digits, tiny models and the "
                              "paper's Table 1 is CIFAR-100, paper-size models: not comparable; "
                              "--compare-paper-anyway"), err
    assert not (tmp_path / "refused").exists() and store.read_bytes() == stored  # nothing written, nothing stored
    code, _, err = bocb_main("report", str(store), "-o", str(tmp_path / "labelled"), "--compare-paper-anyway",
                             "--n-boot", "20", capsys=capsys)
    assert code == 0, err
    page = (tmp_path / "labelled" / "index.html").read_text()
    assert '<h2 id="paper">Beside the paper (Table 1: CIFAR-100 top-1 (%)): not comparable</h2>' in page
    assert ('<p class="warning" id="not-comparable">Not comparable: digits, tiny models vs the paper&#39;s CIFAR-100, '
            "paper-size models — shown for orientation only.</p>") in page
    assert "<th>ours (digits, tiny models)</th>" in page and "<th>difference (not comparable)</th>" in page
    assert "Left out, not in Table 1" not in page  # Table 1 has all of the run's backbones and optimizers
    assert "Not comparable: digits, tiny models" in (tmp_path / "labelled" / "report.md").read_text()


def _rgb(css: str) -> tuple[float, float, float]:
    """'rgb(68, 1, 84)' (getComputedStyle's form) -> (r, g, b) in 0..1."""
    red, green, blue = (int(v) / 255 for v in re.findall(r"\d+", css)[:3])
    return red, green, blue


@pytest.mark.chromium
def test_the_report_of_a_real_run_in_headless_chromium(tiny_run, tmp_path):
    from bocb.report._contrast import WCAG_AA, contrast_ratio

    report = tiny_run / "report"
    page = (report / "index.html").read_text()
    dom = _rendered(report / "index.html", tmp_path)
    widths = _written_by_script(dom, "image-check")  # every image loaded, the ridge plots' behind <details> too
    assert len(widths) == page.count("<img ") == len(report_files(report)["png"]) and all(w > 0 for w in widths)
    assert re.findall(r"<h2[^>]*>", dom)[0] == '<h2 id="verdict">'  # the answer first
    rendered = _written_by_script(dom, "heatmap-check")  # each cell's computed background and text colour
    assert len(rendered) == len(RUN_SPEC["backbones"]) * len(RUN_OPTIMIZERS)
    for background, text, number in rendered:
        assert contrast_ratio(_rgb(background), _rgb(text)) >= WCAG_AA, (number, background, text)
    details = page.index('<details id="ridge-plots">')
    assert page.index('class="fig-ridge"') > details and page.rindex('class="fig-weights"') < details
    optimizer_figures = [svg.stem for svg in report.glob("*.svg") if svg.stem != "heatmap"]
    _check_one_colour_per_optimizer(report, optimizer_figures)
